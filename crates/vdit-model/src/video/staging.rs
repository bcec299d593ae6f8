//! Writing under a temporary name and renaming when complete.
//!
//! A [`StagedFile`] or [`StagedDir`] lives next to its target under a hidden temporary name. Only
//! `commit` moves it to the target; dropping it uncommitted (an error, a panic) deletes it, so the
//! target path never holds a half-written video.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::VideoError;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A hidden name in `folder`, unique within this machine's running processes.
fn temp_name(folder: &Path, name: &str) -> PathBuf {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    folder.join(format!(".{name}.{}-{id}.partial", std::process::id()))
}

/// The folder that holds `target`, which must exist.
fn existing_parent(target: &Path) -> Result<PathBuf, VideoError> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(VideoError::invalid(
            target,
            format!("the folder {} does not exist", parent.display()),
        ));
    }
    Ok(parent)
}

fn file_name(target: &Path) -> Result<String, VideoError> {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| VideoError::invalid(target, "the path has no file name"))
}

/// A file written under a temporary name, renamed to its target by [`StagedFile::commit`].
pub(crate) struct StagedFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
    committed: bool,
}

impl StagedFile {
    pub(crate) fn create(target: &Path) -> Result<Self, VideoError> {
        if target.is_dir() {
            return Err(VideoError::invalid(target, "the path is a folder"));
        }
        let parent = existing_parent(target)?;
        let temp = temp_name(&parent, &file_name(target)?);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| VideoError::io(target, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            temp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            committed: false,
        })
    }

    /// The final path.
    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    fn inner(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the staged file is closed"))
    }

    /// Flushes, syncs and renames the file to its target, replacing an existing file.
    pub(crate) fn commit(mut self) -> Result<(), VideoError> {
        let target = self.target.clone();
        let writer = self
            .file
            .take()
            .ok_or_else(|| VideoError::io(&target, io::Error::other("the file is closed")))?;
        let file = writer
            .into_inner()
            .map_err(|e| VideoError::io(&target, e.into_error()))?;
        file.sync_all().map_err(|e| VideoError::io(&target, e))?;
        drop(file);
        fs::rename(&self.temp, &target).map_err(|e| VideoError::io(&target, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner()?.flush()
    }
}

impl Seek for StagedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner()?.seek(pos)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A folder of files written under a temporary name, moved to its target by
/// [`StagedDir::commit`].
///
/// When the target folder does not exist, the temporary folder sits beside it and is renamed to
/// it. When it exists, the temporary folder sits inside it and `commit` moves each file in,
/// replacing files of the same name.
pub(crate) struct StagedDir {
    target: PathBuf,
    temp: PathBuf,
    merge: bool,
    committed: bool,
}

impl StagedDir {
    pub(crate) fn create(target: &Path) -> Result<Self, VideoError> {
        let (temp, merge) = if target.is_dir() {
            (temp_name(target, "frames"), true)
        } else {
            if target.exists() {
                return Err(VideoError::invalid(
                    target,
                    "the path exists and is not a folder",
                ));
            }
            let parent = existing_parent(target)?;
            (temp_name(&parent, &file_name(target)?), false)
        };
        fs::create_dir(&temp).map_err(|e| VideoError::io(target, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            temp,
            merge,
            committed: false,
        })
    }

    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary folder to write the files into.
    pub(crate) fn path(&self) -> &Path {
        &self.temp
    }

    /// Moves the files to the target. With an existing target folder, afterwards deletes the
    /// files there for which `stale` is true and that this commit did not bring.
    pub(crate) fn commit(mut self, stale: impl Fn(&str) -> bool) -> Result<(), VideoError> {
        let target = self.target.clone();
        let io_err = |e| VideoError::io(&target, e);
        if !self.merge {
            fs::rename(&self.temp, &target).map_err(io_err)?;
            self.committed = true;
            return Ok(());
        }
        let mut brought = std::collections::HashSet::new();
        for entry in fs::read_dir(&self.temp).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            fs::rename(entry.path(), target.join(&name)).map_err(io_err)?;
            brought.insert(name);
        }
        fs::remove_dir(&self.temp).map_err(io_err)?;
        self.committed = true;
        for entry in fs::read_dir(&target).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            if !brought.contains(&name) && stale(&name.to_string_lossy()) {
                fs::remove_file(entry.path()).map_err(io_err)?;
            }
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}
