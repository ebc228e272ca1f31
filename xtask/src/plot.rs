//! One SVG per benchmark group: a bar per benchmark showing current speed
//! over baseline speed (the median of the rounds' paired ratios), with a
//! whisker from the lowest to the highest pair and a line at 1 (no change).

use std::path::Path;

use plotters::prelude::*;

use crate::report::{BenchRow, Change};

const ROW_PIXELS: u32 = 34;
const LABEL_PIXELS: u32 = 330;

pub fn group_chart(path: &Path, title: &str, rows: &[&BenchRow]) -> anyhow::Result<()> {
    let rows: Vec<(&BenchRow, f64, (f64, f64))> = rows
        .iter()
        .filter_map(|row| {
            let ratios = row.ratios.as_ref()?;
            Some((*row, ratios.median, (ratios.min, ratios.max)))
        })
        .collect();
    anyhow::ensure!(!rows.is_empty(), "{title}: nothing measured on both sides");
    let x_max = rows
        .iter()
        .map(|(_, _, (_, high))| *high)
        .fold(1.2f64, f64::max)
        * 1.1;
    let height = 90 + ROW_PIXELS * rows.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: current speed / baseline speed"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(LABEL_PIXELS)
        .build_cartesian_2d(0f64..x_max, 0f64..rows.len() as f64)?;
    let names: Vec<String> = rows
        .iter()
        .map(|(row, _, _)| {
            let name = row
                .id
                .strip_prefix(&format!("{}/", row.group))
                .unwrap_or(&row.id);
            if row.control {
                format!("{name} (control)")
            } else {
                name.to_string()
            }
        })
        .collect();
    let count = rows.len();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(count * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels sit at the middle of each bar's band.
            let band = y.floor();
            if (y - band - 0.5).abs() < 1e-6 && band >= 0.0 && (band as usize) < count {
                names[count - 1 - band as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("ratio (above 1: faster)")
        .draw()?;
    for (index, (row, ratio, (low, high))) in rows.iter().enumerate() {
        let band = (count - 1 - index) as f64;
        let colour = if row.control {
            RGBColor(160, 160, 160)
        } else {
            match row.change {
                Change::Slower => RGBColor(200, 50, 40),
                Change::Faster => RGBColor(40, 150, 70),
                Change::Within => RGBColor(70, 110, 180),
            }
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, band + 0.2), (*ratio, band + 0.8)],
            colour.filled(),
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(*low, band + 0.5), (*high, band + 0.5)],
            BLACK.stroke_width(2),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{ratio:.2}"),
            (high.max(*ratio) + x_max * 0.01, band + 0.62),
            ("sans-serif", 13),
        )))?;
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0.0), (1.0, count as f64)],
        BLACK.stroke_width(1),
    )))?;
    root.present()?;
    Ok(())
}
