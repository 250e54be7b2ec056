/* Work-arounds for the Debian 12 mingw-w64 toolchain (mingw-w64 10 headers, GCC 12) when
 * cross-compiling llama.cpp. Force-included (-include) into every C and C++ source by
 * llama_mingw.py. Each fix is off unless llama_mingw.py's probe of the toolchain found the
 * problem and defined its GLMV_* macro: this file comes before any system header, so it
 * cannot test for a missing typedef itself, and a second definition would not compile.
 */
#ifndef GLMV_MINGW_COMPAT_H
#define GLMV_MINGW_COMPAT_H

/* GLMV_NEED_THREAD_POWER_THROTTLING: ggml-cpu.c (ggml_thread_apply_priority) asks Windows not
 * to power-throttle its worker threads with SetThreadInformation(GetCurrentThread(),
 * ThreadPowerThrottling, &state, sizeof state). mingw-w64 10 declares SetThreadInformation and
 * the ThreadPowerThrottling enumerator, but not THREAD_POWER_THROTTLING_STATE or its constants.
 * Layout and values as the Windows SDK documents them (processthreadsapi.h): three ULONGs,
 * version 1, execution-speed flag 0x1. */
#if defined(GLMV_NEED_THREAD_POWER_THROTTLING) && defined(_WIN32)
#define THREAD_POWER_THROTTLING_CURRENT_VERSION 1
#define THREAD_POWER_THROTTLING_EXECUTION_SPEED 0x1
#define THREAD_POWER_THROTTLING_VALID_FLAGS (THREAD_POWER_THROTTLING_EXECUTION_SPEED)

/* ULONG is a 32-bit unsigned long on Windows (LLP64); <windows.h> is not included yet. */
typedef struct _THREAD_POWER_THROTTLING_STATE {
    unsigned long Version;
    unsigned long ControlMask;
    unsigned long StateMask;
} THREAD_POWER_THROTTLING_STATE, *PTHREAD_POWER_THROTTLING_STATE;
#endif

/* GLMV_FIX_AMX_TILE_STRIDE: GCC 12's AMX tile load/store intrinsics pass the row stride to the
 * asm as a `long`, which is 32 bits on Windows, so the assembler gets a 32-bit index register
 * beside a 64-bit base ("(%rax,%edi,1) is not a valid base/index expression") in ggml's
 * amx/mmq.cpp (the sapphirerapids CPU variant, the only one built with -mamx-tile). The
 * public _tile_* macros expand to the *_internal ones where they are used, so redefining those
 * after <immintrin.h> (whose include guard keeps later includes from undoing it) with a
 * 64-bit stride is enough. AT&T syntax only: nothing here is built with -masm=intel. */
#if defined(GLMV_FIX_AMX_TILE_STRIDE) && defined(__AMX_TILE__)
#include <immintrin.h>
#undef _tile_loadd_internal
#undef _tile_stream_loadd_internal
#undef _tile_stored_internal
#define _tile_loadd_internal(dst, base, stride) \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #dst \
                     :: "r"((const void *) (base)), "r"((long long) (stride)))
#define _tile_stream_loadd_internal(dst, base, stride) \
    __asm__ volatile("tileloaddt1 (%0,%1,1), %%tmm" #dst \
                     :: "r"((const void *) (base)), "r"((long long) (stride)))
#define _tile_stored_internal(src, base, stride) \
    __asm__ volatile("tilestored %%tmm" #src ", (%0,%1,1)" \
                     :: "r"((void *) (base)), "r"((long long) (stride)) : "memory")
#endif

#endif /* GLMV_MINGW_COMPAT_H */
