//! The node config parser and its validation (`raftlm::config::Config::parse`,
//! which `Config::load` calls with the file's text).
//!
//! Properties, for any valid UTF-8 text (`load` uses `read_to_string`):
//! - `parse` never panics, and every error names the file;
//! - a config that parses validates again, openraft accepts the Raft
//!   settings made from it (`raftlm::node::raft_config`), and written back as
//!   TOML it parses to the same config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use raftlm::config::{Config, ConfigError};

const PATH: &str = "/etc/raftlm/node.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(PATH);
    let config = match Config::parse(path, text) {
        Ok(config) => config,
        Err(e) => {
            match &e {
                ConfigError::Read { .. } => panic!("parse read a file: {e}"),
                ConfigError::Syntax { path, .. } | ConfigError::Invalid { path, .. } => {
                    assert_eq!(path, Path::new(PATH))
                }
            }
            assert!(e.to_string().contains(PATH), "{e} does not name the file");
            return;
        }
    };
    config.validate().unwrap_or_else(|(field, message)| {
        panic!("a parsed config does not validate: {field}: {message}")
    });
    raftlm::node::raft_config(&config)
        .unwrap_or_else(|e| panic!("openraft refuses a validated config: {e}"));
    let _ = config.tls_files();
    let written = toml::to_string(&config).expect("a config writes as TOML");
    let reread = Config::parse(path, &written)
        .unwrap_or_else(|e| panic!("a written config does not parse: {e}\n{written}"));
    assert_eq!(reread, config, "the TOML round trip changed the config");
});
