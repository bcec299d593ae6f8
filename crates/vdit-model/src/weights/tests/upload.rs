//! Uploads to the GPU: values arrive in either storage type; misshapen tensors are refused.

use half::f16;
use vdit_wgpu::testing::test_gpu;
use vdit_wgpu::DType;

use super::*;
use crate::weights::WeightSet;

#[test]
fn uploads_in_both_storage_types_and_checks_shapes() {
    let gpu = test_gpu();
    let dir = TempDir::new("upload");
    let path = dir.join("u.safetensors");
    let values = pattern(3 * 5, 3);
    write_safetensors(
        &path,
        &[
            Raw::f32("w32", &[3, 5], &values),
            Raw::new("w16", safetensors::Dtype::F16, &[3, 5], f16_bytes(&values)),
            Raw::new(
                "wbf",
                safetensors::Dtype::BF16,
                &[3, 5],
                bf16_bytes(&values),
            ),
        ],
    );
    let set = WeightSet::open(&path).unwrap();
    // The pattern's values are multiples of 1/16 within f16 and bf16 precision: all exact.
    for name in ["w32", "w16", "wbf"] {
        for storage in [DType::F32, DType::F16] {
            let tensor = set.upload(gpu, name, &[3, 5], storage).unwrap();
            assert_eq!(tensor.shape(), [3, 5]);
            assert_eq!(tensor.dtype(), storage);
            assert_eq!(
                tensor.to_vec_f32(gpu).unwrap(),
                values,
                "{name} as {storage}"
            );
        }
    }
    let odd = set.upload(gpu, "w16", &[3, 5], DType::F16).unwrap();
    assert_eq!(
        odd.to_bytes(gpu).unwrap(),
        values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect::<Vec<u8>>()
    );

    let message = assert_names(
        set.upload(gpu, "w32", &[5, 3], DType::F32),
        &[&path.display().to_string(), "w32", "[3, 5]", "[5, 3]"],
    );
    assert!(message.contains("expected [5, 3]"), "{message}");
}
