//! The engine service: one engine on a port, applications attach with
//! `FLEXTOE_MODE=service` (see `flextoe_preload::service`).
//!
//! ```sh
//! FLEXTOE_IP=10.0.0.2 FLEXTOE_IFACE=veth1 FLEXTOE_SERVICE=/run/flextoe.sock flextoe-serviced
//! ```

fn main() {
    let cfg = match flextoe_preload::engine::Config::from_env() {
        Ok(Some(c)) if c.service.is_none() => c,
        Ok(Some(_)) => {
            eprintln!("flextoe-serviced: unset FLEXTOE_MODE (the service runs the engine itself)");
            std::process::exit(2);
        }
        Ok(None) => {
            eprintln!("flextoe-serviced: set FLEXTOE_IP and FLEXTOE_IFACE (FLEXTOE_BACKEND, FLEXTOE_MAC, FLEXTOE_SERVICE optional)");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("flextoe-serviced: {e}");
            std::process::exit(2);
        }
    };
    let path = std::env::var("FLEXTOE_SERVICE")
        .unwrap_or_else(|_| flextoe_preload::engine::DEFAULT_SERVICE.to_string());
    if let Err(e) = flextoe_preload::service::run(cfg, &path) {
        eprintln!("flextoe-serviced: {e}");
        std::process::exit(1);
    }
}
