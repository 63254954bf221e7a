-- A minimal SMTP front door for HAProxy, so it can answer the same dialogue as the other
-- servers: greeting, EHLO, QUIT. HAProxy has no SMTP (nor STARTTLS) of its own.
core.register_service("smtp", "tcp", function(applet)
    applet:send("220 bench.localhost ESMTP\r\n")
    while true do
        local line = applet:getline()
        if line == nil or line == "" then
            return
        end
        local verb = string.upper(string.sub(line, 1, 4))
        if verb == "QUIT" then
            applet:send("221 2.0.0 Bye\r\n")
            return
        elseif verb == "EHLO" then
            applet:send("250-bench.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n" ..
                        "250-ENHANCEDSTATUSCODES\r\n250 SIZE 10485760\r\n")
        else
            applet:send("502 5.5.1 Command not recognized\r\n")
        end
    end
end)
