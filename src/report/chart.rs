//! The index trend chart: a PNG (mail clients strip SVG), drawn with plotters into a pixel buffer
//! with the DejaVu Sans font built into the binary, so it looks the same on every machine.

use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const WIDTH: u32 = 640;
const HEIGHT: u32 = 240;

/// One point of the trend: the period id and the organisation's index (None: no data that week).
pub struct Point {
    pub period: String,
    pub value: Option<f64>,
}

/// Draws the index over `points` (oldest first) with the healthy threshold as a dashed line.
pub fn trend_png(points: &[Point], threshold: Option<f64>) -> Result<Vec<u8>> {
    register_font();
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut pixels, points, threshold)
        .map_err(|e| Error::Internal(format!("trend chart: {e}")))?;
    encode_png(&pixels, WIDTH, HEIGHT, "trend chart")
}

/// Makes the font built into the binary plotters' `sans-serif`, once.
pub(super) fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is compiled in and known to parse; a failure here is a build defect.
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("assets/DejaVuSans.ttf does not parse"));
    });
}

/// An RGB pixel buffer of `width` x `height` as PNG; `what` names the picture in an error.
pub(super) fn encode_png(pixels: &[u8], width: u32, height: u32, what: &str) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let encode = |e: png::EncodingError| Error::Internal(format!("{what}: {e}"));
    let mut writer = encoder.write_header().map_err(encode)?;
    writer.write_image_data(pixels).map_err(encode)?;
    writer.finish().map_err(encode)?;
    Ok(png)
}

fn draw(
    pixels: &mut [u8],
    points: &[Point],
    threshold: Option<f64>,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let values = points.iter().filter_map(|p| p.value);
    let low = values
        .clone()
        .chain(threshold)
        .fold(1.0f64, f64::min)
        .min(0.95);
    let low = (low * 10.0).floor() / 10.0;
    let n = points.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(0..n.saturating_sub(1).max(1), low..1.0)?;
    let grey = RGBColor(110, 110, 110);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(RGBColor(236, 236, 236))
        .x_labels(n.min(12))
        .x_label_formatter(&|i| {
            points
                .get(*i)
                .map(|p| p.period.rsplit('-').next().unwrap_or("").to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(("sans-serif", 12).into_font().color(&grey))
        .axis_style(grey)
        .draw()?;
    if let Some(threshold) = threshold {
        let red = RGBColor(200, 60, 60);
        chart.draw_series(DashedLineSeries::new(
            [(0, threshold), (n.saturating_sub(1).max(1), threshold)],
            6,
            4,
            red.stroke_width(1),
        ))?;
    }
    let blue = RGBColor(30, 100, 200);
    // A week without data breaks the line instead of pretending it was zero.
    let mut segment = Vec::new();
    for (i, point) in points.iter().enumerate() {
        match point.value {
            Some(v) => segment.push((i, v)),
            None => {
                chart.draw_series(LineSeries::new(segment.drain(..), blue.stroke_width(2)))?;
            }
        }
    }
    chart.draw_series(LineSeries::new(segment, blue.stroke_width(2)))?;
    chart.draw_series(
        points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.value.map(|v| Circle::new((i, v), 3, blue.filled()))),
    )?;
    root.present()?;
    Ok(())
}
