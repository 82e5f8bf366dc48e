/*
 * Lets Criterion start under ThreadSanitizer (ESKIT_TSAN builds only; make tsan).
 *
 * Criterion's allocator (BoxFort's arena, shared with each test's process) probes random
 * addresses between 0x2000'0000'0000 and 0x7f00'0000'0000 with mincore and maps the first
 * one free with MAP_FIXED. Under TSan nearly all of that range is TSan's own shadow, which
 * it reserves (mincore says mapped) or refuses to let the program map, so Criterion aborts
 * with "Could not initialize inheritable arena" (Criterion issue 274). These two wrappers,
 * linked into the test executables, answer for that range only: a probe outside the
 * program's memory says free, and a fixed mapping asked there is placed in the program's
 * middle range instead (never over anything: MAP_FIXED_NOREPLACE), which BoxFort accepts as
 * its range. Every other call goes to TSan's own interceptor unchanged.
 *
 * The program's ranges are TSan's x86_64 48-bit layout (compiler-rt tsan_platform.h,
 * Mapping48AddressSpace, as in GCC 12's libtsan and Clang 14).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/types.h>

#if !defined(__x86_64__)
#error "ESKIT_TSAN: the Criterion wrappers know TSan's memory layout on x86_64 only"
#endif

#define MID_APP_BEG 0x550000000000ull
#define MID_APP_END 0x568000000000ull
#define MID_APP_STEP 0x100000000ull /* 4 GiB between the places tried */

/* Whether TSan lets the program map at p. */
static int program_memory(const void *p) {
    uintptr_t a = (uintptr_t)p;
    return a < 0x008000000000ull || (a >= MID_APP_BEG && a < MID_APP_END) ||
           (a >= 0x7b0000000000ull && a < 0x7c0000000000ull) || a >= 0x7e8000000000ull;
}

int mincore(void *addr, size_t len, unsigned char *vec) {
    static int (*next)(void *, size_t, unsigned char *);
    if (!program_memory(addr)) { /* TSan's: free, as far as Criterion need know */
        errno = ENOMEM;
        return -1;
    }
    if (!next)
        *(void **)&next = dlsym(RTLD_NEXT, "mincore");
    return next(addr, len, vec);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) {
    static void *(*next)(void *, size_t, int, int, int, off64_t);
    if (!next)
        *(void **)&next = dlsym(RTLD_NEXT, "mmap64");
    if (!(flags & MAP_FIXED) || !addr || program_memory(addr))
        return next(addr, len, prot, flags, fd, off);
    flags = (flags & ~MAP_FIXED) | MAP_FIXED_NOREPLACE;
    for (uintptr_t at = MID_APP_BEG; at < MID_APP_END; at += MID_APP_STEP) {
        void *p = next((void *)at, len, prot, flags, fd, off);
        if (p != MAP_FAILED || errno != EEXIST)
            return p;
    }
    errno = ENOMEM;
    return MAP_FAILED;
}
