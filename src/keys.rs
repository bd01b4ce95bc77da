//! Vendor key files read from disk: the edge between the filesystem and the
//! license domain. `license/signature.rs` parses key text it is given; this
//! module reads the files (refusing one larger than
//! [`KEY_FILE_BYTES_MAX`] before reading it) and hands the text over with
//! the file's name, which every error message names.
//!
//! Left out: writing key files (the CLI writes them, `src/cli/license.rs`).

use std::path::Path;

use crate::license::signature::{KEY_FILE_BYTES_MAX, KeyError, VendorPublicKey, VendorSigningKey};

/// Reads and parses a secret key file.
pub fn load_signing_key(path: &Path) -> Result<VendorSigningKey, KeyError> {
    let name = path.display().to_string();
    VendorSigningKey::parse(&name, &read_key_file(&name, path)?)
}

/// Reads and parses a public key file.
pub fn load_public_key(path: &Path) -> Result<VendorPublicKey, KeyError> {
    let name = path.display().to_string();
    VendorPublicKey::parse(&name, &read_key_file(&name, path)?)
}

/// The text of the key file `path` (named `name` in errors), refused unread
/// when it is larger than [`KEY_FILE_BYTES_MAX`].
fn read_key_file(name: &str, path: &Path) -> Result<String, KeyError> {
    let read_error = |source| KeyError::Read {
        file: name.to_string(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > KEY_FILE_BYTES_MAX {
        return Err(KeyError::TooLong {
            file: name.to_string(),
            max: KEY_FILE_BYTES_MAX,
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}
