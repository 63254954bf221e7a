/* gatehouse-cli: placeholder until the client lands. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "gatehouse-cli: not built yet\n");
    return 2;
}
