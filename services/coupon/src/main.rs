//! The coupon service binary: configured by environment (see the README), stops on SIGTERM.
fn main() -> std::process::ExitCode {
    choreograph::runtime::service_main(|config| {
        Ok(coupon::service(config, coupon::Settings::from_env()?)?)
    })
}
