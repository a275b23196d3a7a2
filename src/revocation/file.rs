//! `store: file` (the default): an append-only JSON Lines file, one
//! [`Revocation`] per line.
//!
//! Why this shape: appending one line and `fsync`ing it is the cheapest write
//! that survives a crash, and a crash can then only tear the *last* line.
//! At start the file is replayed; a torn last line is skipped with a warning
//! and cut off (so the next append starts on a fresh line), a bad line in the
//! middle is skipped with a warning, and the file itself is never discarded.
//!
//! Expired entries and repeated selectors leave dead lines behind; when a
//! purge finds any, the live entries are written to a temporary file which
//! is `fsync`ed and renamed over the old one (atomic on POSIX), then the
//! folder is `fsync`ed so the rename itself is durable.
//!
//! The file is opened for every append rather than kept open: revocations
//! are rare, and a file that became unwritable is reported on the very call
//! that could not store its entry.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::store::{BoxFuture, RevocationStore, StoreError};
use super::{Revocation, Selector};

pub struct FileStore {
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
}

#[derive(Default)]
struct FileState {
    /// The newest entry per selector, as written in the file.
    entries: HashMap<Selector, Revocation>,
    /// Lines in the file, live or dead.
    lines: usize,
    /// The file does not end with a newline (a torn tail that could not be
    /// cut off): the next append starts with one.
    needs_newline: bool,
}

impl FileStore {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Arc::new(Mutex::new(FileState::default())),
        }
    }

    fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::File {
            path: path.to_owned(),
            source,
        }
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path, &mut FileState) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || f(&path, &mut state.lock())).await?
    }
}

impl RevocationStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(self.blocking(|path, st| {
            replay(path, st)?;
            Ok(st.entries.values().cloned().collect())
        }))
    }

    fn add(&self, r: Revocation, _tag: Option<String>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.blocking(move |path, st| append(path, st, r)))
    }

    fn purge(&self, now: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.blocking(move |path, st| {
            st.entries.retain(|_, r| r.keep_until > now);
            if st.lines > st.entries.len() || st.needs_newline {
                compact(path, st)?;
            }
            Ok(())
        }))
    }
}

/// Reads the file into `st`, repairing a torn tail.
fn replay(path: &Path, st: &mut FileState) -> Result<(), StoreError> {
    let err = FileStore::io_err(path);
    let mut raw = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut raw).map_err(&err)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    let complete = raw.last().is_none_or(|b| *b == b'\n');
    let mut chunks: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
    if complete {
        chunks.pop(); // the empty piece after the final newline
    }
    let last = chunks.len();
    let mut torn_tail = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let lineno = i + 1;
        if chunk.iter().all(u8::is_ascii_whitespace) {
            st.lines += 1;
            continue;
        }
        match serde_json::from_slice::<Revocation>(chunk) {
            Ok(r) => {
                st.lines += 1;
                merge(&mut st.entries, r);
            }
            Err(e) if lineno == last && !complete => {
                tracing::warn!(
                    file = %path.display(),
                    line = lineno,
                    error = %e,
                    "revocation file ends with a torn entry (crash during a write?); skipping it"
                );
                torn_tail = true;
            }
            Err(e) => {
                st.lines += 1;
                tracing::warn!(
                    file = %path.display(),
                    line = lineno,
                    error = %e,
                    "unreadable revocation entry skipped"
                );
            }
        }
    }
    if torn_tail {
        // Cut the torn piece so the next append starts a fresh line.
        let keep = raw.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let cut = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(keep as u64).and_then(|()| f.sync_all()));
        if let Err(e) = cut {
            tracing::warn!(file = %path.display(), error = %e, "cannot cut the torn entry; the next entry starts on a new line");
            st.needs_newline = true;
        }
    } else if !complete {
        st.needs_newline = true;
    }
    Ok(())
}

fn merge(entries: &mut HashMap<Selector, Revocation>, r: Revocation) {
    entries
        .entry(r.selector.clone())
        .and_modify(|old| {
            old.revoked_at = old.revoked_at.max(r.revoked_at);
            old.keep_until = old.keep_until.max(r.keep_until);
        })
        .or_insert(r);
}

fn encode(path: &Path, r: &Revocation) -> Result<Vec<u8>, StoreError> {
    let mut line = serde_json::to_vec(r).map_err(|source| StoreError::Encode {
        path: path.to_owned(),
        source,
    })?;
    line.push(b'\n');
    Ok(line)
}

/// Appends one line and waits until it is on disk.
fn append(path: &Path, st: &mut FileState, r: Revocation) -> Result<(), StoreError> {
    let err = FileStore::io_err(path);
    let mut line = encode(path, &r)?;
    if st.needs_newline {
        line.insert(0, b'\n');
    }
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(&err)?;
    f.write_all(&line).map_err(&err)?;
    f.sync_data().map_err(&err)?;
    if !existed {
        sync_dir(path).map_err(&err)?;
    }
    if st.needs_newline {
        st.needs_newline = false;
        st.lines += 1;
    }
    st.lines += 1;
    merge(&mut st.entries, r);
    Ok(())
}

/// Rewrites the file with the live entries only: temp file, fsync, rename.
fn compact(path: &Path, st: &mut FileState) -> Result<(), StoreError> {
    let err = FileStore::io_err(path);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut body = Vec::new();
    let mut live: Vec<&Revocation> = st.entries.values().collect();
    live.sort_by_key(|r| r.revoked_at);
    for r in &live {
        body.extend(encode(path, r)?);
    }
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    tracing::debug!(file = %path.display(), dropped = st.lines - live.len().min(st.lines), "revocation file compacted");
    st.lines = live.len();
    st.needs_newline = false;
    Ok(())
}

/// Makes a create or rename in the file's folder durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(jti: &str, keep_until: i64) -> Revocation {
        Revocation {
            selector: Selector::Jti { jti: jti.into() },
            revoked_at: 100,
            keep_until,
        }
    }

    fn load(path: &Path) -> Vec<Revocation> {
        let mut st = FileState::default();
        replay(path, &mut st).expect("replay");
        let mut v: Vec<_> = st.entries.into_values().collect();
        v.sort_by(|a, b| format!("{:?}", a.selector).cmp(&format!("{:?}", b.selector)));
        v
    }

    #[test]
    fn torn_last_line_is_skipped_and_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rev.jsonl");
        let mut st = FileState::default();
        append(&path, &mut st, entry("a", 1000)).expect("append");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"kind":"jti","jti":"b","revo"#)
            .expect("write");
        drop(f);
        assert_eq!(load(&path), vec![entry("a", 1000)]);
        // The tail was cut: a new entry lands on its own line.
        let mut st = FileState::default();
        replay(&path, &mut st).expect("replay");
        append(&path, &mut st, entry("c", 1000)).expect("append");
        assert_eq!(load(&path), vec![entry("a", 1000), entry("c", 1000)]);
    }

    #[test]
    fn bad_middle_line_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rev.jsonl");
        let good = serde_json::to_string(&entry("a", 5)).expect("json");
        std::fs::write(&path, format!("garbage\n{good}\n")).expect("write");
        assert_eq!(load(&path), vec![entry("a", 5)]);
    }

    #[test]
    fn compaction_drops_expired_and_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rev.jsonl");
        let mut st = FileState::default();
        append(&path, &mut st, entry("old", 10)).expect("append");
        append(&path, &mut st, entry("new", 1000)).expect("append");
        append(&path, &mut st, entry("new", 2000)).expect("append");
        st.entries.retain(|_, r| r.keep_until > 500);
        compact(&path, &mut st).expect("compact");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 1);
        assert_eq!(load(&path), vec![entry("new", 2000)]);
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rev.jsonl");
        std::fs::create_dir(&path).expect("mkdir");
        let mut st = FileState::default();
        let e = append(&path, &mut st, entry("a", 10)).expect_err("must fail");
        assert!(e.to_string().contains("rev.jsonl"), "{e}");
    }
}
