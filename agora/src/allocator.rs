//! The `agora` binary's settings for glibc's allocator. They are process-wide, so the
//! libraries (the server and the client) leave them to the program that embeds them;
//! the binary's commands make them for themselves. Elsewhere than glibc they do nothing.

/// Tells glibc's allocator to keep freed memory for reuse (`agora bench`). By default
/// it hands freed blocks above 128 KiB (its threshold rises up to 32 MiB as it goes)
/// back to the system at once, and trims the heap's free top past twice that: a load
/// generator receiving big values (each reply a fresh allocation, freed a moment later)
/// then faults every value's pages in again. perf on 1 MiB gets: page faults and their
/// locks half of the generator's CPU, its throughput swinging 2x from run to run
/// (bench/changes.md, round 24). `redis-benchmark` links jemalloc, which keeps freed
/// memory for a while.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt has no preconditions (it takes the allocator's lock); it only
    // changes the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Has glibc keep at most `arenas` malloc arenas (`agora serve`: one per worker thread),
/// unless `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` says otherwise. By default every thread
/// that allocates gets an arena of its own, up to 8 per CPU, and memory freed in one
/// arena is reused only by allocations from it. A CPython client's connection runs on a
/// thread of its own (`--python-threads`): values it stored and a native client then
/// replaced left their memory free in that thread's arena while the worker took fresh
/// pages for the new ones (1,000 values of 1 MiB replaced: 222,000 page faults and twice
/// the server's CPU; bench/changes.md, round 24). Small blocks do not touch the arenas'
/// locks (glibc caches them per thread), so sharing costs the small calls nothing
/// measurable.
pub fn share_arenas(arenas: usize) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas.max(1)).unwrap_or(i32::MAX));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
