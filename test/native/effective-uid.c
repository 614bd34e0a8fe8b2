// The nonewprivs image's program (test/support/critest-images.ts): installed setuid root, it
// prints its effective uid, which is 0 when the setuid bit took effect and the caller's uid
// when no_new_privs kept it from doing so (critest's NoNewPrivs specs read this line).
#include <stdio.h>
#include <unistd.h>

int main(void) {
  printf("Effective uid: %d\n", (int)geteuid());
  return 0;
}
