//! SVG plots of a run: delivery latency percentiles per second, and server RSS against open
//! connections.

use crate::report::Row;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// A line: name, value of a row, colour.
type Series = (&'static str, fn(&Row) -> Option<f64>, RGBColor);

fn fmax(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(0.0, f64::max)
}

/// p50/p90/p99 of each second with deliveries; false if there were none.
pub fn latency(rows: &[Row], path: &Path, title: &str) -> Result<bool> {
    let pts: Vec<&Row> = rows.iter().filter(|r| r.p50_ms.is_some()).collect();
    let Some(first) = pts.first() else { return Ok(false) };
    let t0 = first.t as f64 - 1.0;
    let xmax = pts.last().map_or(1.0, |r| r.t as f64 - t0).max(1.0);
    let ymax = fmax(pts.iter().filter_map(|r| r.p99_ms)).max(0.1) * 1.1;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds into traffic")
        .y_desc("delivery latency, ms")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let series: [Series; 3] = [("p50", |r| r.p50_ms, BLUE), ("p90", |r| r.p90_ms, GREEN), ("p99", |r| r.p99_ms, RED)];
    for (name, get, color) in series {
        chart
            .draw_series(LineSeries::new(pts.iter().filter_map(|r| get(r).map(|v| (r.t as f64 - t0, v))), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(true)
}

/// Server RSS (MiB) against open connections, in time order; false without RSS readings.
pub fn rss(rows: &[Row], path: &Path, title: &str) -> Result<bool> {
    let pts: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.server_rss_mib.map(|m| (r.conns as f64, m))).collect();
    if pts.len() < 2 {
        return Ok(false);
    }
    let xmax = fmax(pts.iter().map(|p| p.0)).max(1.0) * 1.05;
    let ymax = fmax(pts.iter().map(|p| p.1)).max(1.0) * 1.1;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("open connections")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("server RSS, MiB")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart.draw_series(LineSeries::new(pts, BLUE.stroke_width(2))).map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(true)
}
