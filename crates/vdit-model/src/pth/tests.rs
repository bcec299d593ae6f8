//! Archives built here (the zip writer, stored entries, as torch.save lays them out) with
//! pickles written by the test pickle writer.

use std::io::Write;
use std::path::PathBuf;

use half::{bf16, f16};

use super::pickle::tests::Writer;
use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdit-pth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `archive/data.pkl`, `archive/byteorder` and `archive/data/<key>` entries.
fn write_archive(path: &Path, pickle: &[u8], storages: &[(&str, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A state dict of three views of storages "0" (f32, 12 elements) and "1" (bf16, 4 elements):
/// `w` [3, 4] contiguous, `t` = the transpose [4, 3] of the same storage, `s` = row 2 of it
/// ([4] at offset 8), and `b` [2, 2] bf16.
fn sample_pickle() -> Vec<u8> {
    let mut w = Writer::default();
    w.proto()
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .op(b'(')
        .str("w")
        .tensor("FloatStorage", "0", 12, 0, &[3, 4], &[4, 1])
        .str("t")
        .tensor("FloatStorage", "0", 12, 0, &[4, 3], &[1, 4])
        .str("s")
        .tensor("FloatStorage", "0", 12, 8, &[4], &[1])
        .str("b")
        .tensor("BFloat16Storage", "1", 4, 0, &[2, 2], &[2, 1])
        .op(b'u')
        .op(b'.');
    w.0
}

fn sample_storages() -> Vec<(&'static str, Vec<u8>)> {
    let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let bf: Vec<u8> = [1.0f32, -2.0, 0.5, 3.0]
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
        .collect();
    vec![("0", f32_bytes(&values)), ("1", bf)]
}

#[test]
fn reads_views_with_strides_offsets_and_dtypes() {
    let dir = temp_dir("views");
    let path = dir.join("sample.pth");
    write_archive(&path, &sample_pickle(), &sample_storages());
    let f = PthFile::open(&path).unwrap();
    assert_eq!(f.names().collect::<Vec<_>>(), ["b", "s", "t", "w"]);
    let w = f.get("w").unwrap();
    assert!(w.info().is_contiguous());
    assert!(matches!(w.bytes(), Cow::Borrowed(_)));
    assert_eq!(w.to_f32(), (0..12).map(|i| i as f32).collect::<Vec<_>>());
    let t = f.get("t").unwrap();
    assert!(!t.info().is_contiguous());
    assert_eq!(
        t.to_f32(),
        vec![0.0, 4.0, 8.0, 1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0]
    );
    assert_eq!(f.get("s").unwrap().to_f32(), vec![8.0, 9.0, 10.0, 11.0]);
    let b = f.get("b").unwrap();
    assert_eq!(b.dtype(), StorageDType::BF16);
    assert_eq!(b.to_f32(), vec![1.0, -2.0, 0.5, 3.0]);
    let h = b.to_storage(DType::F16);
    let h: Vec<f32> = h
        .chunks_exact(2)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
        .collect();
    assert_eq!(h, vec![1.0, -2.0, 0.5, 3.0]);
    let err = f.get("nope").unwrap_err().to_string();
    assert!(
        err.contains("no tensor 'nope'") && err.contains("sample.pth"),
        "{err}"
    );
    let err = b.check_shape(&[4]).unwrap_err().to_string();
    assert!(err.contains("[2, 2]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_truncation_is_an_error() {
    let dir = temp_dir("truncated");
    let path = dir.join("full.pth");
    write_archive(&path, &sample_pickle(), &sample_storages());
    let full = std::fs::read(&path).unwrap();
    let cut = dir.join("cut.pth");
    for n in (0..full.len()).step_by(7).chain([full.len() - 1]) {
        std::fs::write(&cut, &full[..n]).unwrap();
        let err = PthFile::open(&cut).unwrap_err();
        assert!(err.to_string().contains("cut.pth"), "{n}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_byte_inserted_or_removed_is_refused_before_the_directory_is_read() {
    let dir = temp_dir("shifted");
    let path = dir.join("full.pth");
    write_archive(&path, &sample_pickle(), &sample_storages());
    let full = std::fs::read(&path).unwrap();
    assert!(PthFile::open(&path).is_ok());
    let shifted = dir.join("shifted.pth");
    for at in [40, full.len() / 2, full.len() - 30] {
        let mut inserted = full.clone();
        inserted.insert(at, b'x');
        let mut removed = full.clone();
        removed.remove(at);
        for bytes in [inserted, removed] {
            std::fs::write(&shifted, &bytes).unwrap();
            let err = PthFile::open(&shifted).unwrap_err().to_string();
            assert!(err.contains("shifted.pth"), "{at}: {err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn views_outside_their_storage_are_refused() {
    let dir = temp_dir("bounds");
    let path = dir.join("oob.pth");
    let mut w = Writer::default();
    w.proto()
        .op(b'}')
        .str("x")
        .tensor("FloatStorage", "0", 12, 4, &[3, 4], &[4, 1])
        .op(b's')
        .op(b'.');
    write_archive(&path, &w.0, &sample_storages()[..1]);
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("tensor 'x'") && err.contains("reaches element 15"),
        "{err}"
    );
    // A storage claiming more elements than its entry holds.
    let mut w = Writer::default();
    w.proto()
        .op(b'}')
        .str("x")
        .tensor("FloatStorage", "0", 13, 0, &[13], &[1])
        .op(b's')
        .op(b'.');
    write_archive(&path, &w.0, &sample_storages()[..1]);
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("needs more than the 48 bytes"), "{err}");
    // A storage that is not in the archive.
    let mut w = Writer::default();
    w.proto()
        .op(b'}')
        .str("x")
        .tensor("FloatStorage", "7", 1, 0, &[1], &[1])
        .op(b's')
        .op(b'.');
    write_archive(&path, &w.0, &sample_storages()[..1]);
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("archive/data/7"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_forbidden_global_inside_an_archive_names_the_file_and_the_global() {
    let dir = temp_dir("evil");
    let path = dir.join("evil.pth");
    let marker = dir.join("pwned");
    let mut w = Writer::default();
    w.proto()
        .op(b'}')
        .str("x")
        .global("os", "system")
        .str(&format!("touch {}", marker.display()))
        .op(0x85)
        .op(b'R')
        .op(b's')
        .op(b'.');
    write_archive(&path, &w.0, &[]);
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("evil.pth")
            && err.contains("os.system")
            && err.contains("nothing was executed"),
        "{err}"
    );
    assert!(!marker.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn legacy_and_non_zip_files_are_errors() {
    let dir = temp_dir("legacy");
    let path = dir.join("legacy.pth");
    std::fs::write(&path, [0x80, 0x02, 0x8a, 0x0a, 0x6c]).unwrap();
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("legacy"), "{err}");
    std::fs::write(&path, b"").unwrap();
    assert!(PthFile::open(&path).is_err());
    std::fs::write(&path, b"PK\x03\x04 not really a zip").unwrap();
    assert!(PthFile::open(&path).is_err());
    let err = PthFile::open(dir.join("missing.pth"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pth"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn views_larger_than_their_storage_are_refused() {
    // Stride 0 repeats one element 2^31 - 1 times per row: reading it would gather 32 GiB.
    let mut w = Writer::default();
    w.proto()
        .op(b'}')
        .str("x")
        .tensor("FloatStorage", "0", 1, 0, &[i32::MAX, 4], &[0, 0])
        .op(b's')
        .op(b'.');
    let dir = temp_dir("expanded");
    let path = dir.join("expanded.pth");
    write_archive(&path, &w.0, &[("0", f32_bytes(&[1.0]))]);
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("tensor 'x'") && err.contains("larger than its storage of 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bytes` (a zip archive) with a zip64 end record and locator in front of its end record,
/// which then defers to them, the zip64 record claiming `entries` entries.
fn with_zip64_end(bytes: &[u8], entries: u64) -> Vec<u8> {
    let end = bytes.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as u64;
    let (cd_size, cd_offset) = (u32_at(end + 12), u32_at(end + 16));
    let mut out = bytes[..end].to_vec();
    out.extend(b"PK\x06\x06");
    out.extend(44u64.to_le_bytes());
    out.extend([45, 0, 45, 0]);
    out.extend([0u8; 8]);
    for v in [entries, entries, cd_size, cd_offset] {
        out.extend(v.to_le_bytes());
    }
    out.extend(b"PK\x06\x07");
    out.extend(0u32.to_le_bytes());
    out.extend((end as u64).to_le_bytes());
    out.extend(1u32.to_le_bytes());
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend([0xff; 4]);
    out.extend([0xff; 8]);
    out.extend([0, 0]);
    out
}

#[test]
fn a_zip64_directory_claiming_too_many_entries_is_refused() {
    let dir = temp_dir("zip64-count");
    let path = dir.join("count.pth");
    write_archive(&path, &sample_pickle(), &sample_storages());
    let bytes = std::fs::read(&path).unwrap();
    // The zip64 form of the archive reads as the archive does.
    std::fs::write(&path, with_zip64_end(&bytes, 4)).unwrap();
    assert_eq!(PthFile::open(&path).unwrap().len(), 4);
    // 2^40 entries: trusting the count would reserve terabytes for the directory.
    std::fs::write(&path, with_zip64_end(&bytes, 1 << 40)).unwrap();
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("counts 1099511627776 and"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn end_records_whose_entry_counts_disagree_are_refused() {
    let dir = temp_dir("eocd-count");
    let path = dir.join("count.pth");
    write_archive(&path, &sample_pickle(), &sample_storages());
    let bytes = std::fs::read(&path).unwrap();
    let end = bytes.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    // The count of entries on this disk raised alone (the zip crate reserves a record for
    // each), then both counts raised past what the directory's bytes can hold.
    for (field, count) in [(8, 60_000u16), (8, 1000), (10, 1000)] {
        let mut bad = bytes.clone();
        bad[end + field..end + field + 2].copy_from_slice(&count.to_le_bytes());
        if field == 8 && count == 1000 {
            bad[end + 10..end + 12].copy_from_slice(&count.to_le_bytes());
        }
        std::fs::write(&path, &bad).unwrap();
        let err = PthFile::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("count.pth") && err.contains("entries in a directory"),
            "{err}"
        );
    }
    // A zip64 end record whose counts the classic record contradicts.
    let mut z = with_zip64_end(&bytes, 4);
    let classic = z.len() - 22;
    z[classic + 8..classic + 12].copy_from_slice(&[7, 0, 7, 0]);
    std::fs::write(&path, &z).unwrap();
    let err = PthFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("disagree"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_reads_through_the_one_weight_loader() {
    use crate::weights::{FileFormat, StoredDType, WeightFile, WeightSet};
    let dir = temp_dir("weight-set");
    let path = dir.join("sample.pth");
    write_archive(&path, &sample_pickle(), &sample_storages());
    let pth = PthFile::open(&path).unwrap();
    let set = WeightSet::open(&path).unwrap();
    assert_eq!(set.files()[0].format(), FileFormat::Pth);
    assert_eq!(set.names().collect::<Vec<_>>(), ["b", "s", "t", "w"]);
    for name in ["b", "s", "t", "w"] {
        let view = set.get(name).unwrap();
        assert_eq!(view.shape(), pth.get(name).unwrap().shape(), "{name}");
        assert_eq!(
            view.to_f32().unwrap(),
            pth.get(name).unwrap().to_f32(),
            "{name}"
        );
        assert_eq!(
            view.numel() * if name == "b" { 2 } else { 4 },
            view.bytes().len()
        );
    }
    assert_eq!(set.info("b").unwrap().dtype(), StoredDType::BF16);
    // A contiguous view is borrowed from the mapping; a strided one is gathered once and kept.
    let w = set.get("w").unwrap();
    assert_eq!(
        w.bytes(),
        f32_bytes(&(0..12).map(|i| i as f32).collect::<Vec<_>>())
    );
    let t1 = set.get("t").unwrap().bytes().as_ptr();
    let t2 = set.get("t").unwrap().bytes().as_ptr();
    assert_eq!(t1, t2);
    let halves = set.read_storage("b", DType::F16).unwrap();
    assert_eq!(halves.len(), 8);
    let err = set.get("nope").unwrap_err().to_string();
    assert!(
        err.contains("sample.pth") && err.contains("'nope'"),
        "{err}"
    );
    // Told by its first bytes whatever its name, and its refusals name the file.
    let renamed = dir.join("sample.bin");
    std::fs::copy(&path, &renamed).unwrap();
    assert_eq!(
        WeightFile::open(&renamed).unwrap().format(),
        FileFormat::Pth
    );
    let legacy = dir.join("legacy.pth");
    std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0x6c]).unwrap();
    let err = WeightSet::open(&legacy).unwrap_err().to_string();
    assert!(
        err.contains("legacy.pth") && err.contains("legacy"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
