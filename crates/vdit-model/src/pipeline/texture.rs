//! Generated frames as a texture an app draws, filled on the GPU that made them.
//!
//! `show` converts one frame of a [`Video`] to RGBA8 in a padded staging buffer (a compute
//! kernel) and copies that buffer into an `Rgba8Unorm` texture: two submissions on the same
//! queue, so the copy sees the kernel's output and nothing waits on the host.

use vdit_wgpu::kernels::rgba::{frames_to_rgba, padded_row_pixels};
use vdit_wgpu::{DType, Gpu, Recorder, Tensor};

use super::generate::Video;
use crate::error::{input_err, Result};

/// An `Rgba8Unorm` texture of one video frame, with the buffer it is filled from.
pub struct FrameTexture {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    /// `height` rows of `row_stride` packed RGBA8 pixels.
    staging: Tensor,
    width: usize,
    height: usize,
    row_stride: usize,
}

impl FrameTexture {
    /// The usages of the texture: sampled by the app's shaders, filled by copies, and a render
    /// target for apps that draw over it.
    pub const USAGE: wgpu::TextureUsages = wgpu::TextureUsages::TEXTURE_BINDING
        .union(wgpu::TextureUsages::COPY_DST)
        .union(wgpu::TextureUsages::COPY_SRC)
        .union(wgpu::TextureUsages::RENDER_ATTACHMENT);

    /// A texture of `width` x `height` pixels on `gpu`'s device (contents undefined until `show`).
    pub fn new(gpu: &Gpu, width: usize, height: usize) -> Result<Self> {
        let max = gpu.limits.max_texture_dimension_2d as usize;
        if width == 0 || height == 0 || width > max || height > max {
            return Err(input_err(
                "frame texture",
                format!("{width}x{height} must be within 1..={max} on each side"),
            ));
        }
        let row_stride = padded_row_pixels(width);
        let staging = Tensor::empty(gpu, &[height, row_stride], DType::F32)?;
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("video frame"),
            size: wgpu::Extent3d {
                width: width as u32,
                height: height as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: Self::USAGE,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Ok(Self {
            texture,
            view,
            staging,
            width,
            height,
            row_stride,
        })
    }

    /// A texture the size of `video`'s frames.
    pub fn for_video(gpu: &Gpu, video: &Video) -> Result<Self> {
        let (height, width) = video_size(video)?;
        Self::new(gpu, width, height)
    }

    /// Fills the texture with frame `frame` of `video` (which must live on `gpu`'s device and
    /// match the texture's size). Records and submits; does not wait.
    pub fn show(&self, gpu: &Gpu, video: &Video, frame: usize) -> Result<()> {
        let (height, width) = video_size(video)?;
        let frames = video.frames.shape()[1];
        if (width, height) != (self.width, self.height) || frame >= frames {
            return Err(input_err(
                "frame texture",
                format!(
                    "frame {frame} of a {frames}-frame {width}x{height} video \
                     does not fit a {}x{} texture",
                    self.width, self.height
                ),
            ));
        }
        let mut rec = Recorder::new(gpu);
        frames_to_rgba(
            &mut rec,
            &video.frames,
            frame,
            self.row_stride,
            &self.staging,
        )?;
        rec.submit(None)?;
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("frame to texture"),
            });
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: self.staging.buffer(),
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(self.row_stride as u32 * 4),
                    rows_per_image: Some(self.height as u32),
                },
            },
            self.texture.as_image_copy(),
            self.extent(),
        );
        gpu.queue.submit([enc.finish()]);
        Ok(gpu.check_health()?)
    }

    pub fn texture(&self) -> &wgpu::Texture {
        &self.texture
    }

    /// A view of the whole texture, for the app's bind groups.
    pub fn view(&self) -> &wgpu::TextureView {
        &self.view
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    fn extent(&self) -> wgpu::Extent3d {
        wgpu::Extent3d {
            width: self.width as u32,
            height: self.height as u32,
            depth_or_array_layers: 1,
        }
    }
}

/// (height, width) of a video's frames, once checked to be [3, T, H, W].
fn video_size(video: &Video) -> Result<(usize, usize)> {
    match *video.frames.shape() {
        [3, t, h, w] if t > 0 => Ok((h, w)),
        _ => Err(input_err(
            "frame texture",
            format!("video frames must be [3, T, H, W], got {:?}", video.frames),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::unit_to_u8;
    use vdit_wgpu::testing::{seed, test_gpu, Rng};

    /// The texture's pixels, row by row, `width * 4` bytes each.
    fn read_texture(gpu: &Gpu, t: &FrameTexture) -> Vec<u8> {
        let stride = padded_row_pixels(t.width()) * 4;
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("texture readback"),
            size: (stride * t.height()) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_texture_to_buffer(
            t.texture().as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(stride as u32),
                    rows_per_image: None,
                },
            },
            t.extent(),
        );
        gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        buffer
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        gpu.wait().unwrap();
        rx.recv().unwrap().unwrap();
        let mapped = buffer.slice(..).get_mapped_range().unwrap();
        mapped
            .chunks(stride)
            .flat_map(|row| row[..t.width() * 4].to_vec())
            .collect()
    }

    #[test]
    fn texture_shows_each_frame_as_the_video_writers_would() {
        let gpu = test_gpu();
        let seed = seed();
        let mut rng = Rng::new(seed);
        let (frames, height, width) = (3, 5, 70);
        let data = rng.vec_uniform(3 * frames * height * width, 1.1);
        let video = Video {
            frames: Tensor::from_f32(gpu, &[3, frames, height, width], &data, DType::F32).unwrap(),
            fps: 16,
        };
        let texture = FrameTexture::for_video(gpu, &video).unwrap();
        assert_eq!((texture.width(), texture.height()), (width, height));
        let plane = height * width;
        for frame in [2, 0] {
            texture.show(gpu, &video, frame).unwrap();
            let got = read_texture(gpu, &texture);
            let channel = |c: usize| &data[(c * frames + frame) * plane..][..plane];
            let want: Vec<u8> = (0..plane)
                .flat_map(|i| {
                    [
                        unit_to_u8(channel(0)[i]),
                        unit_to_u8(channel(1)[i]),
                        unit_to_u8(channel(2)[i]),
                        255,
                    ]
                })
                .collect();
            assert!(
                got == want,
                "frame {frame}: texture differs from the RGB8 conversion (replay with VDIT_TEST_SEED={seed})"
            );
        }
    }

    #[test]
    fn texture_rejects_a_frame_of_another_size() {
        let gpu = test_gpu();
        let video = Video {
            frames: Tensor::empty(gpu, &[3, 2, 4, 6], DType::F32).unwrap(),
            fps: 16,
        };
        let texture = FrameTexture::new(gpu, 6, 5).unwrap();
        let err = texture.show(gpu, &video, 0).unwrap_err().to_string();
        assert!(err.contains("6x5 texture"), "{err}");
        let texture = FrameTexture::new(gpu, 6, 4).unwrap();
        let err = texture.show(gpu, &video, 2).unwrap_err().to_string();
        assert!(err.contains("frame 2 of a 2-frame"), "{err}");
        assert!(FrameTexture::new(gpu, 0, 4).is_err());
    }
}
