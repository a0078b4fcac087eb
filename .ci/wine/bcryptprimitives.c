/*
 * bcryptprimitives.dll for Wine 8: only ProcessPrng.
 *
 * Why: Rust's standard library (1.78 and later) imports ProcessPrng from
 * bcryptprimitives.dll for HashMap seeds and other random bytes. Windows 10
 * and later have it; Wine 8.0 (Debian 12) has no bcryptprimitives.dll at
 * all, so every Rust .exe fails to load under it. .ci/wine-smoke builds
 * this file into a DLL next to addrinuse.exe, where the loader finds it
 * (and sets WINEDLLOVERRIDES=bcryptprimitives=n,b so that it also wins
 * over the builtin of a later Wine).
 *
 * It forwards to SystemFunction036 (RtlGenRandom) from advapi32, which
 * Wine has had for a long time. Not for use on real Windows.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *          bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom; ntsecapi.h declares it only behind a macro. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Windows documents ProcessPrng as always returning TRUE; it cannot fail. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
