//! The embedded store puts SQLite on mimalloc with its memory statistics off
//! (`storage_workers::sqlite::memory`). A test binary of its own: the settings only take when
//! nothing in the process has initialised SQLite before the store opens.

#![allow(unsafe_code)]

use storage_workers::sqlite::SqliteStore;
use switchboard_core::config::StorageConfig;

#[test]
fn the_embedded_store_puts_sqlite_on_mimalloc_without_statistics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = SqliteStore::open(dir.path(), &StorageConfig::default()).expect("open the store");
    // SAFETY: sqlite3_malloc/sqlite3_free pair on an initialised SQLite; mimalloc's queries
    // only read its own tables.
    unsafe {
        let p = rusqlite::ffi::sqlite3_malloc(1000);
        assert!(!p.is_null());
        assert!(libmimalloc_sys::mi_is_in_heap_region(p), "SQLite's block is not mimalloc's");
        assert!(rusqlite::ffi::sqlite3_msize(p) >= 1000);
        // With statistics on, SQLite counts the open store's page cache and schema here.
        assert_eq!(rusqlite::ffi::sqlite3_memory_used(), 0, "SQLite still keeps memory statistics");
        rusqlite::ffi::sqlite3_free(p);
    }
}
