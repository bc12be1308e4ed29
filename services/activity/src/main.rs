//! The activity service binary: configured by environment (see the README), stops on SIGTERM.
fn main() -> std::process::ExitCode {
    choreograph::runtime::service_main(|config| {
        Ok(activity::service(config, activity::Settings::from_env()?)?)
    })
}
