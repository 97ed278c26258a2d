//! The process's heap page policy, set by `main` (and by the benchmark floor, so the two stay
//! like-for-like) before anything else runs.

/// Keeps the heap in 4 KiB pages on hosts whose transparent huge pages are `always` (the
/// `no_thp` build of mimalloc only stops it from asking for them, which covers `madvise`
/// hosts). A 2 MiB page is resident as soon as one byte of it is touched, and a gateway's heap
/// is many small, scattered allocations per connection: with huge pages, 1,000 served
/// keep-alive connections cost ~21 KiB more each and the idle process ~14 MiB more, for a few
/// percent of throughput (README "Fifth round").
pub fn keep_in_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) with PR_SET_THP_DISABLE takes plain integers and only sets a flag on
    // this process; failure (an old kernel) leaves the host's policy in place, which is fine.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
