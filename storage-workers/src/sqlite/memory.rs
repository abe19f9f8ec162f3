//! SQLite's heap: mimalloc instead of the C library's malloc, and no memory statistics.
//!
//! In a 1:1 saturation profile the writer thread spent ~8 % of the server's CPU in glibc's
//! malloc/free and in the mutex SQLite takes around every allocation to keep its memory
//! statistics (`SQLITE_CONFIG_MEMSTATUS`, which nothing here reads). Both are process-wide
//! settings that SQLite accepts only before it initialises, so [`configure`] runs once, before
//! the first connection is opened; if something else in the process initialised SQLite first,
//! the settings are refused and SQLite keeps its defaults (logged, not an error).

#![allow(unsafe_code)]

use libmimalloc_sys as mi;
use rusqlite::ffi;
use std::os::raw::{c_int, c_void};
use std::sync::Once;

/// Routes SQLite's allocations to mimalloc and turns its memory statistics off, once per
/// process.
pub(super) fn configure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: sqlite3_config before sqlite3_initialize is the documented use; SQLite copies
        // the methods struct; a call after initialisation returns SQLITE_MISUSE and changes
        // nothing.
        let (malloc, memstatus) = unsafe {
            (
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
            )
        };
        if malloc != ffi::SQLITE_OK || memstatus != ffi::SQLITE_OK {
            tracing::info!(malloc, memstatus, "SQLite was initialised already; it keeps its default allocator");
        }
    });
}

// SQLite asks for 8-byte alignment; mimalloc gives at least that for every size.

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    // SAFETY: plain allocation; SQLite never asks for a negative size.
    unsafe { mi::mi_malloc(usize::try_from(n).unwrap_or(0)) }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    // SAFETY: `p` came from x_malloc/x_realloc (or is null).
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: `p` came from x_malloc/x_realloc.
    unsafe { mi::mi_realloc(p, usize::try_from(n).unwrap_or(0)) }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    // SAFETY: `p` came from x_malloc/x_realloc (or is null, which gives 0).
    c_int::try_from(unsafe { mi::mi_usable_size(p) }).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // SAFETY: a pure size computation.
    c_int::try_from(unsafe { mi::mi_good_size(usize::try_from(n).unwrap_or(0)) }).unwrap_or(n)
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}
