//! Passes on whether the librdkafka this build links carries the fix Choreograph's workspace
//! patches in (`vendor/rdkafka-sys/PATCH.md`): the vendored `rdkafka-sys` says so to the build
//! scripts of its direct dependents, crates.io's does not. The framework warns at start-up when
//! it is missing (`config::check_librdkafka`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_RDKAFKA_CHOREOGRAPH_PATCHES");
    let patches = std::env::var("DEP_RDKAFKA_CHOREOGRAPH_PATCHES").unwrap_or_default();
    println!("cargo:rustc-env=CHOREOGRAPH_LIBRDKAFKA_PATCHES={patches}");
}
