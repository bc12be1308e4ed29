//! `limit_malloc_arenas` caps glibc's arenas. (Its own test binary: the cap applies to arenas
//! created after the call, so nothing else may run in this process first.)

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn threads_allocating_at_once_share_one_arena() {
    /// The arenas glibc has made so far (`<heap nr="..">` entries of `malloc_info`).
    fn arenas() -> usize {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        let text = unsafe {
            let stream = libc::open_memstream(&mut buf, &mut len);
            assert!(!stream.is_null());
            assert_eq!(libc::malloc_info(0, stream), 0);
            libc::fclose(stream);
            let text = std::slice::from_raw_parts(buf as *const u8, len).to_vec();
            libc::free(buf.cast());
            String::from_utf8(text).unwrap()
        };
        text.matches("<heap nr=").count()
    }

    assert!(
        std::env::var_os("MALLOC_ARENA_MAX").is_none(),
        "run without MALLOC_ARENA_MAX"
    );
    // The main thread's arena and this test thread's may exist already.
    let before = arenas();
    assert!(before <= 2, "{before} arenas before the call");
    choreograph::runtime::limit_malloc_arenas();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut kept = Vec::new();
                for n in 0..20_000usize {
                    kept.push(vec![i as u8; 16 + n % 512]);
                    if kept.len() > 64 {
                        kept.swap_remove(n % 64);
                    }
                }
                kept.len()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() > 0);
    }
    // Without the cap, eight threads contending for malloc get arenas of their own.
    assert_eq!(arenas(), before, "no arena was added for the eight threads");
}
