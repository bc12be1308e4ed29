//! The points service binary: configured by environment (see the README), stops on SIGTERM.
fn main() -> std::process::ExitCode {
    choreograph::runtime::service_main(|config| {
        Ok(points::service(config, points::Settings::from_env()?)?)
    })
}
