//! The vendor key-file parsers (`raftlm::license::signature`:
//! `VendorPublicKey::parse` for `.pub` files, `VendorSigningKey::parse` for
//! `.key` files) and the client's server-list syntax
//! (`raftlm::client::ServerList::parse`, from `--server` and
//! `RAFTLM_SERVER`).
//!
//! Properties, for any valid UTF-8 text:
//! - no parser panics;
//! - a key that parses writes back (`to_file_text`) to a file that parses to
//!   the same key, vendor and id;
//! - a server list that parses is not empty, and parsing its addresses again
//!   gives the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlm::client::ServerList;
use raftlm::license::signature::{VendorPublicKey, VendorSigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = VendorPublicKey::parse("fuzz.pub", text) {
        let written = key.to_file_text();
        let back = VendorPublicKey::parse("fuzz.pub", &written)
            .unwrap_or_else(|e| panic!("a written public key does not parse: {e}"));
        assert_eq!(back.to_bytes(), key.to_bytes());
        assert_eq!(back.vendor(), key.vendor());
        assert_eq!(back.key_id(), key.key_id());
        let _ = key.key_id().to_string();
    }
    if let Ok(key) = VendorSigningKey::parse("fuzz.key", text) {
        let written = key.to_file_text();
        let back = VendorSigningKey::parse("fuzz.key", &written)
            .unwrap_or_else(|e| panic!("a written secret key does not parse: {e}"));
        assert_eq!(back.public_key().to_bytes(), key.public_key().to_bytes());
        assert_eq!(back.vendor(), key.vendor());
    }
    if let Ok(list) = ServerList::parse(text) {
        assert!(!list.is_empty());
        let again = ServerList::from_addresses(list.addresses())
            .unwrap_or_else(|e| panic!("a parsed server list does not parse again: {e}"));
        assert_eq!(again, list);
    }
});
