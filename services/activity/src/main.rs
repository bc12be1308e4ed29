//! The activity service binary: configured by environment (its own settings: the README; Kafka
//! and the runtime: docs/configuration.md), stops on SIGTERM.
fn main() -> std::process::ExitCode {
    choreograph::runtime::service_main(|config| {
        Ok(activity::service(config, activity::Settings::from_env()?)?)
    })
}
