//! The marker file kept next to sled's files: that a database was created in
//! this directory, and the latest vote saved (see [`store`](super::store)).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec;

use super::Vote;

/// The marker file kept next to sled's files: a database was created here,
/// and the latest vote saved.
pub const MARKER_FILE: &str = "RAFTLM_NODE";
/// The marker file while it is being replaced.
const MARKER_TMP_FILE: &str = "RAFTLM_NODE.tmp";

/// What the marker file records.
///
/// Its existence says a database was created in this directory; its vote is
/// a floor for the vote sled must still hold (see [`store`](super::store)).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// The latest vote saved; written after the same vote was flushed to sled.
    pub(crate) vote: Option<Vote>,
}

/// Replaces the marker file atomically and durably (temporary file, fsync,
/// rename, fsync of the directory). Blocking.
pub(crate) fn write_marker(dir: &Path, marker: &Marker) -> io::Result<()> {
    let bytes = codec::encode(marker).map_err(io::Error::other)?;
    let tmp = dir.join(MARKER_TMP_FILE);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(MARKER_FILE))?;
    fs::File::open(dir)?.sync_all()
}
