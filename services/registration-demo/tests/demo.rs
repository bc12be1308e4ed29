//! The README's first command: the registration saga end to end on the embedded Kafka (no
//! broker needed), every saga ending, exit status 0.

use std::process::Command;

#[test]
fn the_demo_runs_every_saga_to_its_end_on_the_embedded_kafka() {
    let out = Command::new(env!("CARGO_BIN_EXE_registration-demo"))
        .args(["--sagas", "60"])
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Kafka: embedded"), "{stdout}");
    assert!(stdout.contains("summary (60 sagas"), "{stdout}");
    for outcome in ["completed", "compensated", "rejected"] {
        assert!(stdout.contains(outcome), "no {outcome} saga in:\n{stdout}");
    }
}
