/*
 * evil.so: a library whose constructor creates the file named by $EVIL_MARKER
 * (./evil-ran without it) the moment anything loads it. The trust tests put it
 * where an untrusted config would have eskit load it, as a librdkafka plugin or
 * as a projector module, and check that the marker never appears.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void evil_ran(void) {
    const char *marker = getenv("EVIL_MARKER");
    int fd = open(marker && *marker ? marker : "evil-ran", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0)
        close(fd);
}
