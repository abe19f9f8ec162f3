//! The process allocator: mimalloc, with arenas committed on demand.
//!
//! Measured with chatbench (benches/RESULTS.md): glibc malloc and free were ~17 % of the
//! server's CPU at 1:1 saturation (`malloc_consolidate`, `_int_free` and arena locks); mimalloc
//! cuts server CPU per message by ~10 %. With mimalloc's defaults the idle figure doubled
//! (1,292-1,377 B per idle session vs ~530 B with glibc): on Linux it commits whole arenas
//! eagerly, so the pages freed after the connect ramp's handshakes stay resident. Committing on
//! demand (`arena_eager_commit = 0`, what `MIMALLOC_ARENA_EAGER_COMMIT=0` sets) brings it back:
//! 520.9-531.1 B per idle session measured with this setting. This one option is fixed here;
//! `MIMALLOC_*` variables still set the others.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (the same index in v2 and v3).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets the options before `main`, and so before the first Rust allocation reserves an arena:
/// an `.init_array` entry without a priority runs after mimalloc's own constructor (priority
/// 101, which reads the `MIMALLOC_*` environment) and before the program's `main`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static SET_OPTIONS: extern "C" fn() = set_options;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn set_options() {
    // Nothing here may allocate (reading the environment would): the first allocation
    // reserves the arena. SAFETY: mi_option_set only stores an integer in mimalloc's option
    // table; no other thread runs before main.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
}
