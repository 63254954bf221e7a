"""The mail front doors (SMTP, LMTP, IMAP, POP3, ManageSieve) against the real daemon, with
Python's own clients where it has one and raw sockets elsewhere: greetings, what is offered
before and after the TLS upgrade, the upgrade itself, plaintext injected behind it, refused
and repeated upgrades, over-long lines, unknown commands, the limit and shutdown goodbyes."""
import imaplib
import poplib
import re
import signal
import smtplib
import socket
import ssl
import time

import pytest

HOST = "127.0.0.1"


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def listener(gatehouse, port, protocol, tls, **extra):
    """tls: "plain" (useTls false), "starttls" or "implicit"."""
    props = dict(protocol=protocol, bind=[f"{HOST}:{port}"], useTls=tls != "plain")
    if tls != "plain":
        props["tlsImplicit"] = tls == "implicit"
    props.update(extra)
    return gatehouse.create_listener(**props)


class Line:
    """A raw text session: send bytes, read CRLF lines, upgrade to TLS in place."""

    def __init__(self, port, timeout=5):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode() + "\n"

    def until(self, pred):
        """Lines up to and including the first one pred accepts."""
        lines = []
        while True:
            lines.append(self.line())
            if pred(lines[-1]):
                return lines

    def starttls(self):
        assert self.buf == b"", self.buf  # nothing may be pending before the handshake
        self.sock = client_ctx().wrap_socket(self.sock)

    def closed(self):
        """True when the server closes without sending anything more."""
        try:
            return self.buf == b"" and self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()


def host_of(greeting):
    return re.search(r"(\S+) (?:ESMTP|ready)", greeting).group(1)


# ---- SMTP / LMTP ----

def test_smtp_plain_listener(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "smtp", "plain")
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        code, resp = smtp.ehlo("client.example")
        assert code == 250
        first = resp.decode().splitlines()[0]
        assert re.fullmatch(r"\S+ Hello client\.example \[127\.0\.0\.1\]", first), first
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "size"):
            assert smtp.has_extn(ext), ext
        assert not smtp.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.starttls()
        assert smtp.docmd("STARTTLS") == (502, b"5.7.0 TLS not available")
        assert smtp.noop() == (250, b"2.0.0 OK")
        assert smtp.rset() == (250, b"2.0.0 OK")
        assert smtp.docmd("HELP")[0] == 214
        assert smtp.docmd("LHLO x")[0] == 500
        assert smtp.docmd("FROB") == (500, b"5.5.1 Command not recognized")
        code, msg = smtp.mail("a@example.org")
        assert (code, msg[:5]) == (451, b"4.3.0"), msg
        assert smtp.quit()[0] == 221


def test_smtp_sendmail_is_a_temporary_failure(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "smtp", "plain")
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            smtp.sendmail("a@example.org", ["b@example.org"], "Subject: x\r\n\r\nbody\r\n")
        assert e.value.smtp_code == 451


def test_smtp_starttls_then_session_is_reset(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "smtp", "starttls")
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("starttls")
        assert smtp.starttls(context=client_ctx())[0] == 220
        # After the upgrade nothing the client said before counts: EHLO first.
        assert smtp.docmd("MAIL FROM:<a@example.org>")[0] == 503
        smtp.ehlo("client.example")
        assert not smtp.has_extn("starttls")
        assert smtp.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        assert smtp.mail("a@example.org")[0] == 451


def test_smtp_starttls_injection_is_not_answered(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "smtp", "starttls")
    s = Line(port)
    assert s.line().startswith("220 ")
    s.send(b"EHLO x\r\nSTARTTLS\r\nNOOP\r\nRSET\r\n")
    lines = s.until(lambda l: l.startswith("220 "))
    assert lines[-1] == "220 2.0.0 Ready to start TLS\r\n"
    s.starttls()
    s.send(b"HELP\r\n")
    # The first reply inside TLS answers HELP: the NOOP and RSET sent in clear were dropped.
    assert s.line().startswith("214 ")
    s.close()


def test_smtp_implicit_tls_offers_no_starttls(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "smtp", "implicit")
    with smtplib.SMTP_SSL(HOST, port, timeout=5, context=client_ctx()) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("pipelining")
        assert not smtp.has_extn("starttls")
        assert smtp.docmd("STARTTLS")[0] == 503


def test_lmtp_uses_lhlo(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "lmtp", "starttls")
    lmtp = smtplib.LMTP(HOST, port, timeout=5)
    try:
        assert lmtp.docmd("EHLO x")[0] == 500
        assert lmtp.docmd("HELO x")[0] == 500
        code, resp = lmtp.ehlo("client.example")  # smtplib.LMTP sends LHLO
        assert code == 250
        assert lmtp.has_extn("starttls") and lmtp.has_extn("enhancedstatuscodes")
        assert lmtp.starttls(context=client_ctx())[0] == 220
        lmtp.ehlo("client.example")
        assert not lmtp.has_extn("starttls")
        assert lmtp.mail("a@example.org")[0] == 451
    finally:
        lmtp.quit()


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_over_long_line(gatehouse, free_port, protocol):
    port = free_port()
    listener(gatehouse, port, protocol, "plain")
    s = Line(port)
    s.line()
    s.send(b"NOOP " + b"A" * 10000 + b"\r\nNOOP\r\n")
    if protocol == "smtp":
        assert s.line() == "500 5.5.2 Line too long\r\n"
        assert s.line() == "250 2.0.0 OK\r\n"
    else:
        assert s.line() == "-ERR Line too long\r\n"
        assert s.line() == "+OK\r\n"
    s.close()


# ---- IMAP ----

def test_imap_plain_listener(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "imap", "plain")
    imap = imaplib.IMAP4(HOST, port, timeout=5)
    assert "IMAP4REV1" in imap.capabilities and "IMAP4REV2" in imap.capabilities
    assert "STARTTLS" not in imap.capabilities
    assert "LOGINDISABLED" not in imap.capabilities
    assert imap.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2")
    assert imap.noop()[0] == "OK"
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        imap.login("bob", "secret")
    assert imap._simple_command("STARTTLS") == ("NO", [b"TLS not available"])
    typ, data = imap.logout()
    assert typ == "BYE"


def test_imap_starttls(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "imap", "starttls")
    imap = imaplib.IMAP4(HOST, port, timeout=5)
    assert "STARTTLS" in imap.capabilities and "LOGINDISABLED" in imap.capabilities
    assert "AUTH=PLAIN" not in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        imap.login("bob", "secret")
    assert imap.starttls(ssl_context=client_ctx())[0] == "OK"
    # imaplib asked CAPABILITY again inside TLS.
    assert "STARTTLS" not in imap.capabilities and "LOGINDISABLED" not in imap.capabilities
    assert "AUTH=PLAIN" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="TLS already active"):
        imap._simple_command("STARTTLS")
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        imap.login("bob", "secret")
    imap.logout()


def test_imap_starttls_injection_is_not_answered(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "imap", "starttls")
    s = Line(port)
    assert s.line().startswith("* OK [CAPABILITY ")
    s.send(b"a STARTTLS\r\nb NOOP\r\nc LOGOUT\r\n")
    assert s.line() == "a OK Begin TLS negotiation now\r\n"
    s.starttls()
    s.send(b"d NOOP\r\n")
    assert s.line() == "d OK NOOP completed\r\n"
    s.close()


def test_imap_errors_and_literals(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "imap", "plain")
    s = Line(port)
    s.line()
    s.send(b"a1 FROB\r\n")
    assert s.line() == "a1 BAD Unknown command\r\n"
    # A non-synchronizing literal holding a command is skipped, not run.
    s.send(b"a2 LOGIN {12+}\r\nx2 LOGOUT\r\n pw\r\na3 NOOP\r\n")
    assert s.line().startswith("a2 NO [UNAVAILABLE]")
    assert s.line() == "a3 OK NOOP completed\r\n"
    s.send(b"a4 NOOP " + b"x" * 9000 + b"\r\na5 NOOP\r\n")
    assert s.line() == "* BAD [TOOBIG] Line too long\r\n"
    assert s.line() == "a5 OK NOOP completed\r\n"
    s.close()


# ---- POP3 ----

def test_pop3_plain_listener(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "pop3", "plain")
    pop = poplib.POP3(HOST, port, timeout=5)
    assert re.fullmatch(rb"\+OK \S+ ready", pop.getwelcome())
    capa = pop.capa()
    assert "STLS" not in capa  # Stalwart lists it even without TLS; we do not
    assert "USER" in capa and "RESP-CODES" in capa
    with pytest.raises(poplib.error_proto, match="TLS not available"):
        pop._shortcmd("STLS")
    assert pop.noop().startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        pop.user("bob")
    with pytest.raises(poplib.error_proto, match="Unknown command"):
        pop._shortcmd("FROB")
    assert pop.quit().startswith(b"+OK")


def test_pop3_stls(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "pop3", "starttls")
    pop = poplib.POP3(HOST, port, timeout=5)
    capa = pop.capa()
    assert "STLS" in capa and "USER" not in capa
    assert pop.stls(context=client_ctx()).startswith(b"+OK Begin TLS negotiation now")
    capa = pop.capa()
    assert "STLS" not in capa and "USER" in capa
    with pytest.raises(poplib.error_proto, match="TLS active"):
        pop._shortcmd("STLS")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        pop.user("bob")
    pop.quit()


def test_pop3_stls_injection_is_not_answered(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "pop3", "starttls")
    s = Line(port)
    s.line()
    s.send(b"STLS\r\nNOOP\r\nQUIT\r\n")
    assert s.line() == "+OK Begin TLS negotiation now\r\n"
    s.starttls()
    s.send(b"CAPA\r\n")
    assert s.line() == "+OK Capability list follows\r\n"
    s.close()


# ---- ManageSieve ----

def sieve_block(s):
    return s.until(lambda l: l.startswith(("OK", "NO", "BYE")))


def test_managesieve_plain_listener(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "manageSieve", "plain")
    s = Line(port)
    greeting = sieve_block(s)
    assert greeting[0] == '"IMPLEMENTATION" "Gatehouse"\r\n'
    assert '"SASL" "PLAIN"\r\n' in greeting and '"VERSION" "1.0"\r\n' in greeting
    assert '"NOTIFY" "mailto"\r\n' in greeting  # RFC 5804 §1.7, with "enotify"
    assert any(l.startswith('"SIEVE" "fileinto') for l in greeting)
    assert '"STARTTLS"\r\n' not in greeting
    assert re.fullmatch(r'OK "\S+ ready"\r\n', greeting[-1])
    s.send(b"STARTTLS\r\n")
    assert s.line() == 'NO "TLS not available"\r\n'
    s.send(b'NOOP "x1"\r\n')
    assert s.line() == 'OK (TAG "x1") "Done"\r\n'
    s.send(b'AUTHENTICATE "PLAIN" "AGJvYgBzZWNyZXQ="\r\n')
    assert s.line().startswith("NO (TRYLATER)")
    s.send(b"FROB\r\n")
    assert s.line() == 'NO "Unknown command"\r\n'
    s.send(b"CAPABILITY\r\n")
    assert sieve_block(s)[:-1] == greeting[:-1]
    s.send(b"LOGOUT\r\n")
    assert s.line().startswith("OK")
    assert s.closed()


def test_managesieve_starttls_resends_capabilities(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "manageSieve", "starttls")
    s = Line(port)
    greeting = sieve_block(s)
    assert '"STARTTLS"\r\n' in greeting and '"SASL" ""\r\n' in greeting
    s.send(b'STARTTLS\r\nNOOP "injected"\r\n')
    assert s.line().startswith("OK")
    s.starttls()
    again = sieve_block(s)
    assert again[-1].startswith("OK")
    assert '"STARTTLS"\r\n' not in again and '"SASL" "PLAIN"\r\n' in again
    s.send(b'NOOP "after"\r\n')
    assert s.line() == 'OK (TAG "after") "Done"\r\n'  # the injected NOOP got no reply
    s.send(b"STARTTLS\r\n")
    assert s.line() == 'NO "TLS already active"\r\n'
    s.close()


# ---- every protocol: the limit and the shutdown goodbyes ----

GOODBYES = {
    "smtp": ("421 4.3.2 Too many connections\r\n", r"421 4\.3\.0 \S+ shutting down\r\n"),
    "lmtp": ("421 4.3.2 Too many connections\r\n", r"421 4\.3\.0 \S+ shutting down\r\n"),
    "imap": ("* BYE Too many connections\r\n", r"\* BYE \S+ shutting down\r\n"),
    "pop3": ("-ERR [SYS/TEMP] Too many connections\r\n", r"-ERR \[SYS/TEMP\] shutting down\r\n"),
    "manageSieve": ('BYE "Too many connections"\r\n', r'BYE "shutting down"\r\n'),
}


def read_greeting(s, protocol):
    if protocol == "manageSieve":
        return sieve_block(s)[-1]
    return s.line()


@pytest.mark.parametrize("protocol", sorted(GOODBYES))
def test_over_limit_goodbye(gatehouse, free_port, protocol):
    port = free_port()
    listener(gatehouse, port, protocol, "starttls", maxConnections=1)
    first = Line(port)
    read_greeting(first, protocol)
    second = Line(port)
    assert second.line() == GOODBYES[protocol][0]
    assert second.closed()
    first.close()


@pytest.mark.parametrize("protocol", sorted(GOODBYES))
def test_shutdown_goodbye(gatehouse, free_port, protocol):
    port = free_port()
    listener(gatehouse, port, protocol, "starttls")
    s = Line(port)
    read_greeting(s, protocol)
    gatehouse.proc.send_signal(signal.SIGTERM)
    assert re.fullmatch(GOODBYES[protocol][1], s.line())
    assert s.closed()
    assert gatehouse.proc.wait(15) == 0


# ---- the client address in the EHLO reply ----

def test_ehlo_names_the_proxy_source(gatehouse, free_port):
    port = free_port()
    listener(gatehouse, port, "smtp", "plain", overrideProxyTrustedNetworks=["127.0.0.1/32"])
    s = Line(port)
    s.send(f"PROXY TCP4 203.0.113.9 127.0.0.1 40000 {port}\r\n".encode())
    assert s.line().startswith("220 ")
    s.send(b"EHLO client.example\r\n")
    first = s.until(lambda l: l.startswith("250 "))[0]
    assert re.fullmatch(r"250-\S+ Hello client\.example \[203\.0\.113\.9\]\r\n", first), first
    s.close()


def test_ehlo_names_an_ipv6_client(gatehouse, free_port):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port()
    try:
        listener(gatehouse, port, "smtp", "plain", bind=[f"[::1]:{port}"])
    except AssertionError:
        pytest.skip("cannot bind ::1 here")
    with smtplib.SMTP("::1", port, timeout=5) as smtp:
        code, resp = smtp.ehlo("client.example")
        assert resp.decode().splitlines()[0].endswith("Hello client.example [::1]")


# ---- idle time-outs (shortened through GATEHOUSE_MAIL_IDLE_MS) ----

IDLE_GOODBYES = {
    "smtp": r"421 4\.4\.2 \S+ Error: timeout exceeded\r\n",
    "lmtp": r"421 4\.4\.2 \S+ Error: timeout exceeded\r\n",
    "imap": r"\* BYE \S+ autologout; idle for too long\r\n",
    "pop3": r"-ERR \S+ autologout; idle for too long\r\n",
    "manageSieve": r'BYE "Idle timeout, closing connection"\r\n',
}


def test_idle_sessions_time_out(make_daemon, free_port):
    d = make_daemon(extra_env={"GATEHOUSE_MAIL_IDLE_MS": "700"})
    sessions = []
    for protocol in sorted(IDLE_GOODBYES):
        port = free_port()
        listener(d, port, protocol, "starttls")
        s = Line(port)
        read_greeting(s, protocol)
        sessions.append((protocol, s, time.monotonic()))
    for protocol, s, start in sessions:
        assert re.fullmatch(IDLE_GOODBYES[protocol], s.line()), protocol
        assert 0.5 <= time.monotonic() - start <= 3, protocol
        assert s.closed()


def test_a_trickle_of_bytes_is_not_activity(make_daemon, free_port):
    d = make_daemon(extra_env={"GATEHOUSE_MAIL_IDLE_MS": "800"})
    port = free_port()
    listener(d, port, "smtp", "plain")
    s = Line(port)
    s.line()
    start = time.monotonic()
    s.send(b"NOOP\r\n")  # a complete command re-arms the timer
    assert s.line() == "250 2.0.0 OK\r\n"
    for _ in range(10):  # an unfinished line, one byte at a time, does not
        time.sleep(0.2)
        try:
            s.send(b"N")
        except OSError:
            break
    assert re.fullmatch(IDLE_GOODBYES["smtp"], s.line())
    assert time.monotonic() - start < 1.8
