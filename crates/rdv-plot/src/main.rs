//! `rdv-plot`: draws a line chart (SVG) from a Markdown table that one of
//! rdv's benchmarks printed, so the plots in docs/PERFORMANCE.md come from
//! the benchmarks' own output (`scripts/plots.sh` runs the benchmarks and
//! this).
//!
//! ```text
//! rdv-plot --table idle.md --x "idle peers" --y "RSS with peers" \
//!     --series point --log-x --title "..." --out docs/plots/idle-memory.svg
//! ```
//!
//! Rows are grouped into one line per distinct value of the `--series`
//! columns; cells are read as their leading number (`419.4 MiB` is 419.4,
//! the unit goes on the axis); rows with `-` in a plotted cell are left out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use plotters::prelude::*;

mod table;

use table::{Table, number};

#[derive(Parser)]
#[command(about = "Draw an SVG line chart from a Markdown table a benchmark printed")]
struct Args {
    /// The file holding the table (its first table's header names the columns).
    #[arg(long)]
    table: PathBuf,
    /// Column for the horizontal axis.
    #[arg(long)]
    x: String,
    /// Column for the vertical axis.
    #[arg(long)]
    y: String,
    /// Column(s) whose values name the lines; repeatable.
    #[arg(long)]
    series: Vec<String>,
    /// Keep only rows where COLUMN has VALUE (`COLUMN=VALUE`); repeatable.
    #[arg(long = "where")]
    filters: Vec<String>,
    /// Logarithmic horizontal axis.
    #[arg(long)]
    log_x: bool,
    /// Logarithmic vertical axis.
    #[arg(long)]
    log_y: bool,
    /// Title above the chart.
    #[arg(long)]
    title: String,
    /// The SVG file to write.
    #[arg(long)]
    out: PathBuf,
}

type Lines = BTreeMap<String, Vec<(f64, f64)>>;

fn lines(table: &Table, args: &Args) -> Result<(Lines, String, String), String> {
    let col = |name: &str| {
        table
            .column(name)
            .ok_or_else(|| format!("no column {name:?}; the table has {:?}", table.header))
    };
    let (x, y) = (col(&args.x)?, col(&args.y)?);
    let series = args
        .series
        .iter()
        .map(|s| col(s))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = args
        .filters
        .iter()
        .map(|f| {
            let (c, v) = f
                .split_once('=')
                .ok_or_else(|| format!("--where {f:?}: write COLUMN=VALUE"))?;
            Ok((col(c)?, v.to_string()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (mut x_unit, mut y_unit) = (String::new(), String::new());
    let mut out = Lines::new();
    for row in &table.rows {
        if filters.iter().any(|(c, v)| row[*c] != *v) {
            continue;
        }
        let (Some((xv, xu)), Some((yv, yu))) = (number(&row[x]), number(&row[y])) else {
            continue;
        };
        x_unit = xu;
        y_unit = yu;
        let name = series
            .iter()
            .map(|c| row[*c].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        out.entry(name).or_default().push((xv, yv));
    }
    if out.is_empty() {
        return Err("no row has numbers in both columns".into());
    }
    for points in out.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok((out, x_unit, y_unit))
}

fn axis(name: &str, unit: &str) -> String {
    if unit.is_empty() {
        name.to_string()
    } else {
        format!("{name} ({unit})")
    }
}

fn draw(args: &Args, lines: &Lines, x_desc: &str, y_desc: &str) -> Result<(), String> {
    let all = || lines.values().flatten();
    let span = |vals: Vec<f64>, log: bool| -> (f64, f64) {
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if log {
            (lo.max(f64::MIN_POSITIVE) / 1.5, hi * 1.5)
        } else {
            (lo.min(0.0), if hi > 0.0 { hi * 1.1 } else { 1.0 })
        }
    };
    let (x0, x1) = span(all().map(|p| p.0).collect(), args.log_x);
    let (y0, y1) = span(all().map(|p| p.1).collect(), args.log_y);
    let root = SVGBackend::new(&args.out, (720, 440)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", args.out.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&args.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72);
    // The four combinations of linear and log axes are four chart types.
    macro_rules! plot {
        ($xr:expr, $yr:expr) => {{
            let mut chart = builder.build_cartesian_2d($xr, $yr).map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(|x| e(&x))?;
            for (i, (name, points)) in lines.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|x| e(&x))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(|x| e(&x))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|x| e(&x))?;
        }};
    }
    match (args.log_x, args.log_y) {
        (false, false) => plot!(x0..x1, y0..y1),
        (true, false) => plot!((x0..x1).log_scale(), y0..y1),
        (false, true) => plot!(x0..x1, (y0..y1).log_scale()),
        (true, true) => plot!((x0..x1).log_scale(), (y0..y1).log_scale()),
    }
    root.present().map_err(|x| e(&x))
}

fn run(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.table)
        .map_err(|e| format!("cannot read {}: {e}", args.table.display()))?;
    let table = Table::parse(&text)
        .ok_or_else(|| format!("{} holds no Markdown table", args.table.display()))?;
    let (lines, x_unit, y_unit) = lines(&table, args)?;
    draw(
        args,
        &lines,
        &axis(&args.x, &x_unit),
        &axis(&args.y, &y_unit),
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdv-plot: {e}");
            ExitCode::from(2)
        }
    }
}
