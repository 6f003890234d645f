//! Logging setup shared by both binaries: stderr only (stdout may carry MCP).

use crate::error::Error;
use log::LevelFilter;

/// Maps the Python-style level names (DEBUG, INFO, WARNING, ERROR, CRITICAL).
pub fn parse_level(s: &str) -> Result<LevelFilter, Error> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "DEBUG" => LevelFilter::Debug,
        "INFO" => LevelFilter::Info,
        "WARNING" | "WARN" => LevelFilter::Warn,
        "ERROR" | "CRITICAL" => LevelFilter::Error,
        other => {
            return Err(Error::Config(format!(
                "invalid log level {other:?}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )));
        }
    })
}

/// Parses `--log-level` and starts logging, or exits 2 with the reason.
pub fn init_from_flag(level: &str) {
    match parse_level(level) {
        Ok(l) => init(l),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// Starts logging to stderr at `level`.
pub fn init(level: LevelFilter) {
    let cfg = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .build();
    let _ = simplelog::WriteLogger::init(level, cfg, std::io::stderr());
}

/// Expands a leading `~/` with $HOME, as the Python original does.
pub fn expand_home(p: &str) -> std::path::PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return std::path::Path::new(&home).join(rest);
    }
    std::path::PathBuf::from(p)
}
