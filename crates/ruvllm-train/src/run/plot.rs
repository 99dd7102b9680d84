//! The loss curve as an SVG beside the model.

use std::path::Path;

use plotters::prelude::*;

use super::checkpoint::LossPoint;
use super::TrainError;

/// Draws training and validation loss (nats/token) against the step, plus the unigram
/// baseline, into an SVG string.
pub fn loss_svg(history: &[LossPoint], unigram: f64, title: &str) -> Result<String, TrainError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        draw(&root, history, unigram, title).map_err(|e| TrainError::Plot(e.to_string()))?;
        root.present().map_err(|e| TrainError::Plot(e.to_string()))?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    history: &[LossPoint],
    unigram: f64,
    title: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let last = history.last().map_or(1, |p| p.step.max(1));
    let top = history.iter().map(|p| p.train.max(p.val) as f64).fold(unigram, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0u64..last, 0f64..top.max(0.1))?;
    chart.configure_mesh().x_desc("step").y_desc("loss (nats/token)").draw()?;
    let series = [("train", BLUE, 0usize), ("validation", RED, 1)];
    for (name, colour, which) in series {
        let pts = history.iter().map(|p| (p.step, if which == 0 { p.train } else { p.val } as f64));
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new([(0, unigram), (last, unigram)], grey.stroke_width(1)))?
        .label("unigram baseline")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

pub fn write_loss_svg(
    path: &Path,
    history: &[LossPoint],
    unigram: f64,
    title: &str,
) -> Result<(), TrainError> {
    let svg = loss_svg(history, unigram, title)?;
    super::checkpoint::write_atomic(path, svg.as_bytes())
}
