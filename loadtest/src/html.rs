//! The `--html` report: one static, self-contained page (inline CSS and SVG drawn here;
//! no scripts, fonts or images, nothing fetched from the network) with a summary table
//! and line charts of per-second rates and latencies.

use std::fmt::Write as _;

use crate::timeline::Second;

/// One line of a chart. `None` values leave a gap.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, Option<f64>)>,
}

pub struct Chart {
    pub title: String,
    /// Unit of the y axis, e.g. "messages/s" or "ms".
    pub unit: String,
    pub series: Vec<Series>,
}

pub enum Row {
    Section(String),
    Item(String, String),
}

pub struct Page {
    pub title: String,
    /// Lines under the title (command, machine, ...).
    pub subtitle: Vec<String>,
    pub rows: Vec<Row>,
    pub charts: Vec<Chart>,
    /// Paragraphs after the charts (definitions).
    pub notes: Vec<String>,
}

pub fn item(k: &str, v: impl std::fmt::Display) -> Row {
    Row::Item(k.to_owned(), v.to_string())
}

pub fn section(name: &str) -> Row {
    Row::Section(name.to_owned())
}

/// Colours of the charts (colour-blind safe pairs).
pub const BLUE: &str = "#1f77b4";
pub const ORANGE: &str = "#e8710a";
pub const RED: &str = "#c0392b";
pub const GREEN: &str = "#2e8b57";
pub const PURPLE: &str = "#7b4ea3";

/// Per-second rate of a count: count / the part of the second the run covered; none
/// for a last second the run covered less than a fifth of (too short to say).
pub fn rate(s: &Second, count: u64) -> Option<f64> {
    (s.span_secs >= 0.2).then(|| count as f64 / s.span_secs)
}

/// A series from the timeline, plotted at the middle of each second.
pub fn series(
    timeline: &[Second],
    name: &str,
    color: &'static str,
    dashed: bool,
    f: impl Fn(&Second) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_owned(),
        color,
        dashed,
        points: timeline
            .iter()
            .map(|s| (s.t as f64 + s.span_secs.min(1.0) / 2.0, f(s)))
            .collect(),
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#222;max-width:980px;margin:24px auto;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 6px}\
.sub{color:#555;margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;\
white-space:pre-wrap;word-break:break-all}\
table{border-collapse:collapse;margin-top:16px;min-width:60%}\
td{padding:3px 12px 3px 0;border-bottom:1px solid #eee;vertical-align:top}\
td.k{color:#555;white-space:nowrap}td.v{font-variant-numeric:tabular-nums}\
tr.s td{font-weight:600;border-bottom:1px solid #bbb;padding-top:12px}\
svg{width:100%;height:auto;display:block}svg text{font-size:12px;fill:#444}\
.grid{stroke:#e6e6e6;stroke-width:1}.axis{stroke:#888;stroke-width:1}\
p.note{color:#555;font-size:13px}";

/// One chart as an SVG document of its own (to embed in other documents): the
/// chart's title above it, its styles inside.
pub fn standalone_svg(chart: &Chart) -> String {
    let inner = svg(chart);
    let body = inner
        .strip_prefix(&format!(
            "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
            escape(&chart.title)
        ))
        .and_then(|rest| rest.strip_suffix("</svg>"))
        .unwrap_or(&inner);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 -24 {W} {}\" width=\"{W}\" height=\"{}\" \
         role=\"img\" aria-label=\"{title}\"><style>text{{font:12px sans-serif;fill:#444}}\
         .title{{font-size:14px;font-weight:600;fill:#222}}\
         .grid{{stroke:#e6e6e6;stroke-width:1}}.axis{{stroke:#888;stroke-width:1}}</style>\
         <rect x=\"0\" y=\"-24\" width=\"{W}\" height=\"{}\" fill=\"#fff\"/>\
         <text class=\"title\" x=\"{LEFT}\" y=\"-4\">{title}</text>{body}</svg>\n",
        H + 24.0,
        H + 24.0,
        H + 24.0,
        title = escape(&chart.title),
    )
}

/// The whole page.
pub fn render(page: &Page) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&page.title),
        escape(&page.title)
    );
    for line in &page.subtitle {
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", escape(line));
    }
    h.push_str("<table>\n");
    for row in &page.rows {
        match row {
            Row::Section(name) => {
                let _ = writeln!(
                    h,
                    "<tr class=\"s\"><td colspan=\"2\">{}</td></tr>",
                    escape(name)
                );
            }
            Row::Item(k, v) => {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"k\">{}</td><td class=\"v\">{}</td></tr>",
                    escape(k),
                    escape(v)
                );
            }
        }
    }
    h.push_str("</table>\n");
    for chart in &page.charts {
        let _ = writeln!(h, "<h2>{}</h2>", escape(&chart.title));
        h.push_str(&svg(chart));
        h.push('\n');
    }
    for note in &page.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(note));
    }
    h.push_str("</body></html>\n");
    h
}

const W: f64 = 900.0;
const H: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// A "nice" step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let n = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * p
}

/// Axis: (max, step) covering `max_value` with about `ticks` steps.
pub fn axis(max_value: f64, ticks: f64) -> (f64, f64) {
    let max_value = if max_value.is_finite() && max_value > 0.0 {
        max_value
    } else {
        1.0
    };
    let step = nice_step(max_value / ticks);
    ((max_value / step).ceil().max(1.0) * step, step)
}

fn label(v: f64, step: f64) -> String {
    if v >= 1e6 && step >= 1e5 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 && step >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// One chart as inline SVG.
pub fn svg(chart: &Chart) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let xmax_data = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .ceil()
        .max(1.0);
    let ymax_data = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (xmax, xstep) = axis(xmax_data, 10.0);
    // whole seconds on the time axis
    let (xmax, xstep) = if xstep < 1.0 {
        (xmax_data, 1.0)
    } else {
        (xmax, xstep)
    };
    let (ymax, ystep) = axis(ymax_data * 1.05, 5.0);
    let x = |v: f64| LEFT + v / xmax * pw;
    let y = |v: f64| TOP + ph - v / ymax * ph;

    let mut s = String::with_capacity(8 * 1024);
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(&chart.title)
    );
    // grid and y labels
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let yy = y(v);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            label(v, ystep)
        );
        v += ystep;
    }
    // x labels
    let mut v = 0.0;
    while v <= xmax + xstep / 2.0 {
        let xx = x(v);
        let _ = write!(
            s,
            "<line class=\"axis\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 17.0,
            label(v, xstep)
        );
        v += xstep;
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since start</text>\
         <text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        LEFT + pw,
        TOP + ph,
        TOP + ph,
        TOP + ph,
        LEFT + pw / 2.0,
        H - 6.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(&chart.unit)
    );
    // lines
    for series in &chart.series {
        let dash = if series.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let n_points = series.points.iter().filter(|p| p.1.is_some()).count();
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let flush = |s: &mut String, seg: &mut Vec<(f64, f64)>| {
            if seg.len() == 1 {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>",
                    seg[0].0, seg[0].1, series.color
                );
            } else if seg.len() > 1 {
                let pts: Vec<String> = seg.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
                let _ = write!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" \
                     stroke-linejoin=\"round\"{dash} points=\"{}\"/>",
                    series.color,
                    pts.join(" ")
                );
            }
            seg.clear();
        };
        for &(px, py) in &series.points {
            match py {
                Some(v) => segment.push((x(px), y(v))),
                None => flush(&mut s, &mut segment),
            }
        }
        flush(&mut s, &mut segment);
        if n_points <= 40 {
            for &(px, py) in &series.points {
                if let Some(v) = py {
                    let _ = write!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>",
                        x(px),
                        y(v),
                        series.color
                    );
                }
            }
        }
    }
    // legend, top right
    let mut lx = LEFT + pw;
    for series in chart.series.iter().rev() {
        let w = 26.0 + 7.0 * series.name.chars().count() as f64;
        lx -= w + 12.0;
        let dash = if series.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"12\" y2=\"12\" stroke=\"{}\" stroke-width=\"2.5\"{dash}/>\
             <text x=\"{:.1}\" y=\"16\">{}</text>",
            lx + 20.0,
            series.color,
            lx + 25.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_nice() {
        assert_eq!(axis(9_678.0, 5.0), (10_000.0, 2_000.0));
        assert_eq!(axis(3.2, 5.0), (4.0, 1.0));
        assert_eq!(axis(0.0, 5.0), (1.0, 0.2));
        assert_eq!(axis(47.0, 10.0), (50.0, 5.0));
        assert_eq!(label(20_000.0, 5_000.0), "20k");
        assert_eq!(label(5_000.0, 5_000.0), "5k");
        assert_eq!(label(2_500.0, 500.0), "2500");
        assert_eq!(label(0.4, 0.2), "0.4");
        assert_eq!(label(1_500_000.0, 500_000.0), "1.5M");
    }

    #[test]
    fn page_is_self_contained() {
        let tl: Vec<Second> = (0..5)
            .map(|t| Second {
                t,
                span_secs: 1.0,
                accepted: 100 * t,
                delivered: 90 * t,
                ack_p50_ms: (t != 2).then_some(1.5),
                ..Second::default()
            })
            .collect();
        let page = Page {
            title: "x <y>".into(),
            subtitle: vec!["loadtest smtp -n 5".into()],
            rows: vec![section("Load"), item("accepted/s", "1,234.5")],
            charts: vec![Chart {
                title: "Rate".into(),
                unit: "messages/s".into(),
                series: vec![
                    series(&tl, "accepted/s", BLUE, false, |s| Some(s.accepted as f64)),
                    series(&tl, "ack p50", ORANGE, true, |s| s.ack_p50_ms),
                ],
            }],
            notes: vec!["note & more".into()],
        };
        let html = render(&page);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>x &lt;y&gt;</title>"));
        assert!(html.contains("note &amp; more"));
        assert_eq!(html.matches("<svg").count(), 1);
        // the gap at t=2 splits the p50 line in two
        assert_eq!(html.matches("<polyline").count(), 3);
        for banned in ["<script", "src=", "href=", "url(", "@import", "http"] {
            assert!(!html.contains(banned), "{banned}");
        }
        // The same chart as an SVG document of its own: one root element with the
        // SVG namespace, its title, its styles and its lines.
        let doc = standalone_svg(&page.charts[0]);
        assert!(
            doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{doc}"
        );
        assert!(doc.ends_with("</svg>\n"));
        assert_eq!(doc.matches("<svg").count(), 1);
        assert_eq!(doc.matches("</svg>").count(), 1);
        assert!(doc.contains("<style>") && doc.contains(">Rate</text>"));
        assert_eq!(doc.matches("<polyline").count(), 3);
    }
}
