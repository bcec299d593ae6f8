//! How close a video is to a reference video: PSNR and SSIM.
//!
//! Videos are the VAE's output, f32 `[3, T, H, W]` in [-1, 1], mapped to [0, 1] (clamped).
//! - PSNR: 10 log10(1 / MSE) over every RGB value of every frame (infinite when identical).
//! - SSIM (Wang et al. 2004) on luma Y = 0.299 R + 0.587 G + 0.114 B, per frame, over 8 x 8
//!   windows placed every 4 pixels (the last row and column of windows flush with the edge;
//!   a frame smaller than 8 is one window), uniform weights, population (co)variances,
//!   C1 = (0.01)^2, C2 = (0.03)^2:
//!   SSIM(x, y) = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2)),
//!   averaged over the windows of a frame, then over the frames.

use crate::error::{input_err, Result};

const WINDOW: usize = 8;
const STRIDE: usize = 4;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

fn unit(x: f32) -> f64 {
    ((x as f64 + 1.0) * 0.5).clamp(0.0, 1.0)
}

fn check(a: &[f32], b: &[f32], shape: [usize; 4]) -> Result<()> {
    let n: usize = shape.iter().product();
    if shape[0] != 3 || a.len() != n || b.len() != n || n == 0 {
        return Err(input_err(
            "video quality",
            format!(
                "two videos of shape {shape:?} (3 channels) needed, got {} and {} values",
                a.len(),
                b.len()
            ),
        ));
    }
    Ok(())
}

/// PSNR in dB of `video` against `reference`, both `[3, T, H, W]` in [-1, 1].
pub fn psnr(video: &[f32], reference: &[f32], shape: [usize; 4]) -> Result<f64> {
    check(video, reference, shape)?;
    let mse = video
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (unit(a) - unit(b)).powi(2))
        .sum::<f64>()
        / video.len() as f64;
    Ok(10.0 * (1.0 / mse).log10())
}

/// Mean SSIM of `video` against `reference` (module docs), both `[3, T, H, W]` in [-1, 1].
pub fn ssim(video: &[f32], reference: &[f32], shape: [usize; 4]) -> Result<f64> {
    check(video, reference, shape)?;
    let [_, t, h, w] = shape;
    let plane = h * w;
    let luma = |v: &[f32], f: usize| -> Vec<f64> {
        let at = |c: usize, i: usize| unit(v[(c * t + f) * plane + i]);
        (0..plane)
            .map(|i| 0.299 * at(0, i) + 0.587 * at(1, i) + 0.114 * at(2, i))
            .collect()
    };
    let mut total = 0.0;
    for f in 0..t {
        total += ssim_plane(&luma(video, f), &luma(reference, f), h, w);
    }
    Ok(total / t as f64)
}

/// Window origins along one axis of `len` pixels.
fn origins(len: usize) -> Vec<usize> {
    if len <= WINDOW {
        return vec![0];
    }
    let mut o: Vec<usize> = (0..=len - WINDOW).step_by(STRIDE).collect();
    if *o.last().unwrap() != len - WINDOW {
        o.push(len - WINDOW);
    }
    o
}

/// Mean SSIM over the windows of one `h x w` plane.
pub fn ssim_plane(x: &[f64], y: &[f64], h: usize, w: usize) -> f64 {
    let (wh, ww) = (WINDOW.min(h), WINDOW.min(w));
    let n = (wh * ww) as f64;
    let (mut sum, mut count) = (0.0, 0);
    for &r in &origins(h) {
        for &c in &origins(w) {
            let (mut sx, mut sy) = (0.0, 0.0);
            for i in r..r + wh {
                for j in c..c + ww {
                    sx += x[i * w + j];
                    sy += y[i * w + j];
                }
            }
            let (mx, my) = (sx / n, sy / n);
            let (mut vx, mut vy, mut cxy) = (0.0, 0.0, 0.0);
            for i in r..r + wh {
                for j in c..c + ww {
                    let (dx, dy) = (x[i * w + j] - mx, y[i * w + j] - my);
                    vx += dx * dx;
                    vy += dy * dy;
                    cxy += dx * dy;
                }
            }
            let (vx, vy, cxy) = (vx / n, vy / n, cxy / n);
            sum += (2.0 * mx * my + C1) * (2.0 * cxy + C2)
                / ((mx * mx + my * my + C1) * (vx + vy + C2));
            count += 1;
        }
    }
    sum / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssim_of_known_windows() {
        // A 0/1 checkerboard against itself at half contrast: mx 0.5, my 0.25, sx^2 0.25,
        // sy^2 0.0625, sxy 0.125 -> (0.2501 * 0.2509) / (0.3126 * 0.3134), worked out by hand.
        let x: Vec<f64> = (0..64).map(|i| ((i / 8 + i % 8) % 2) as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| v * 0.5).collect();
        assert!((ssim_plane(&x, &y, 8, 8) - 0.640_510_697_074_702_4).abs() < 1e-12);
        assert!((ssim_plane(&x, &x, 8, 8) - 1.0).abs() < 1e-12);
        // Two flat planes 0.2 and 0.6: only the luminance term, (2*0.12 + C1) / (0.4 + C1).
        let a = vec![0.2; 12 * 10];
        let b = vec![0.6; 12 * 10];
        assert!((ssim_plane(&a, &b, 12, 10) - 0.600_099_975_006_248_3).abs() < 1e-12);
        assert_eq!(origins(12), vec![0, 4]);
        assert_eq!(origins(13), vec![0, 4, 5]);
        assert_eq!(origins(5), vec![0]);
    }

    #[test]
    fn video_measures() {
        let shape = [3, 2, 9, 11];
        let n: usize = shape.iter().product();
        let mut rng = vdit_wgpu::rng::Rng::new(5);
        let a = rng.vec_uniform(n, 1.0);
        assert!(psnr(&a, &a, shape).unwrap().is_infinite());
        assert!((ssim(&a, &a, shape).unwrap() - 1.0).abs() < 1e-12);
        // Every value off by 0.2 in [-1, 1] is 0.1 in [0, 1] (away from the clamp): 20 dB.
        let flat = vec![0.0f32; n];
        let off = vec![0.2f32; n];
        assert!((psnr(&off, &flat, shape).unwrap() - 20.0).abs() < 1e-6);
        let b: Vec<f32> = a.iter().map(|v| v * 0.5).collect();
        let s = ssim(&b, &a, shape).unwrap();
        assert!(s > 0.0 && s < 0.999, "{s}");
        assert!(psnr(&a[1..], &a[1..], shape).is_err());
    }
}
