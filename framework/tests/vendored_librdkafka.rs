//! The workspace builds librdkafka from `vendor/rdkafka-sys`, which carries a fix for an
//! idempotent producer's busy loop (`vendor/rdkafka-sys/PATCH.md`). Nothing at run time tells
//! the patched library from the published one, so these checks guard the two things that make
//! the build use it: the fix is in the vendored source, and `Cargo.lock` takes `rdkafka-sys`
//! from the path, not from crates.io. A re-vendoring or a lock-file update that drops either
//! fails here, not in a benchmark.

use std::path::PathBuf;

fn workspace_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn the_vendored_librdkafka_carries_the_busy_loop_fix() {
    let source = workspace_file("vendor/rdkafka-sys/librdkafka/src/rdkafka_broker.c");
    // The wake-up time is saved before the partition's `allow_wakeup_at` ...
    assert!(
        source.contains("rd_ts_t saved_next_wakeup = *next_wakeup;"),
        "rdkafka_broker.c lost the saved wake-up time: re-apply vendor/rdkafka-sys/idempotent-producer-spin.patch"
    );
    // ... and restored when the in-flight limit leaves the partition no request.
    let restore = "if (max_requests <= 0) {\n                        *next_wakeup = saved_next_wakeup;\n                        return 0;";
    assert!(
        source.contains(restore),
        "rdkafka_broker.c no longer restores the wake-up time: re-apply vendor/rdkafka-sys/idempotent-producer-spin.patch"
    );
}

#[test]
fn the_lock_file_takes_rdkafka_sys_from_the_vendored_path() {
    let lock = workspace_file("Cargo.lock");
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"rdkafka-sys\"\n"))
        .expect("Cargo.lock has an rdkafka-sys package");
    // A path dependency has no `source`; the crates.io one has `source = "registry+..."`.
    assert!(
        !entry.contains("source ="),
        "Cargo.lock takes rdkafka-sys from a registry, not vendor/rdkafka-sys:{entry}"
    );
    assert_eq!(
        lock.matches("\nname = \"rdkafka-sys\"\n").count(),
        1,
        "two rdkafka-sys packages in Cargo.lock: the patch no longer applies to every user"
    );
    let manifest = workspace_file("Cargo.toml");
    assert!(
        manifest.contains("rdkafka-sys = { path = \"vendor/rdkafka-sys\" }"),
        "the root Cargo.toml no longer patches rdkafka-sys with vendor/rdkafka-sys"
    );
}

#[test]
fn the_framework_knows_it_links_the_fixed_librdkafka() {
    // From the vendored build script through the framework's (DEP_RDKAFKA_CHOREOGRAPH_PATCHES):
    // without it, every service would warn at start-up that the fix is missing.
    assert!(
        choreograph::config::librdkafka_has_busy_loop_fix(),
        "the framework does not see the vendored librdkafka's patch marker ({:?}): check vendor/rdkafka-sys/build.rs and framework/build.rs",
        choreograph::config::LIBRDKAFKA_PATCHES
    );
}
