//! The briefing's picture: one PNG with the district's daily AQI against the HJ 633 grades, its PM
//! against GB 3095 grade II, each unit's hourly corrected SO2 and NOx against its limit, the day's
//! water verdicts and the alerts firing, and the plan's indicators coloured by their standing.
//!
//! plotters draws the shapes and the axis numbers into a buffer; every word is then set with
//! `ab_glyph` directly, laid out by the font's own metrics (advance, side bearing, kerning), so CJK
//! and Latin text are spaced as the font means them to be. No fontconfig is needed: the font is a
//! file ([`FONT_CANDIDATES`] or `--font`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font as _, FontArc, PxScale, ScaleFont};
use chrono::NaiveDate;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{status_words, AlertRow, ReportData, ReportError, Tone, WaterRow, POLLUTANTS};

/// Fonts with Chinese glyphs, in order of preference (Debian package paths).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
];

/// The family name plotters draws the axis numbers with.
const FAMILY: &str = "enviromon-cjk";

/// A font with Chinese glyphs, loaded once.
#[derive(Clone)]
pub struct Font {
    face: FontArc,
    pub path: PathBuf,
}

impl std::fmt::Debug for Font {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Font").field("path", &self.path).finish()
    }
}

/// plotters keeps registered fonts for the process's life; it is given one copy, once.
static PLOTTERS_FONT: OnceLock<()> = OnceLock::new();

/// Load a CJK font: the given file, or the first of [`FONT_CANDIDATES`] that exists.
pub fn load_font(explicit: Option<&Path>) -> Result<Font, ReportError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| ReportError::NoFont {
                searched: FONT_CANDIDATES.join(", "),
            })?,
    };
    let bytes = std::fs::read(&path).map_err(|source| ReportError::FontRead {
        path: path.clone(),
        source,
    })?;
    let face = FontArc::try_from_vec(bytes.clone())
        .map_err(|_| ReportError::FontInvalid { path: path.clone() })?;
    let mut registered = Ok(());
    PLOTTERS_FONT.get_or_init(|| {
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        registered = plotters::style::register_font(FAMILY, FontStyle::Normal, bytes);
    });
    registered.map_err(|_| ReportError::FontInvalid { path: path.clone() })?;
    Ok(Font { face, path })
}

/// One piece of text to set after plotters has drawn (absolute pixels, top-left of the line).
struct Label {
    x: i32,
    y: i32,
    size: f32,
    text: String,
    rgb: RGBColor,
    /// Cut with "…" beyond this width.
    max_width: Option<f32>,
}

/// The text of a picture, collected while plotters holds the buffer.
#[derive(Default)]
struct Labels(Vec<Label>);

impl Labels {
    fn at(&mut self, (x, y): (i32, i32), size: f32, text: impl Into<String>, rgb: RGBColor) {
        self.0.push(Label {
            x,
            y,
            size,
            text: text.into(),
            rgb,
            max_width: None,
        });
    }

    fn clipped(
        &mut self,
        (x, y): (i32, i32),
        size: f32,
        text: impl Into<String>,
        rgb: RGBColor,
        max_width: f32,
    ) {
        self.0.push(Label {
            x,
            y,
            size,
            text: text.into(),
            rgb,
            max_width: Some(max_width),
        });
    }
}

/// Width of `text` at `size` px, by the font's advances and kerning.
pub fn text_width(font: &Font, size: f32, text: &str) -> f32 {
    let f = font.face.as_scaled(PxScale::from(size));
    let mut w = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            w += f.kern(p, id);
        }
        w += f.h_advance(id);
        prev = Some(id);
    }
    w
}

/// `text` cut to `max_width` with a trailing "…".
fn fit(font: &Font, size: f32, text: &str, max_width: f32) -> String {
    if text_width(font, size, text) <= max_width {
        return text.to_string();
    }
    let mut out: String = text.to_string();
    while !out.is_empty() && text_width(font, size, &format!("{out}…")) > max_width {
        out.pop();
    }
    format!("{out}…")
}

/// Set `text` with its top-left at (x, y): each glyph at the pen position plus its own bearing,
/// the pen moved by the advance and the pair's kerning; coverage blended over the image.
pub fn put_text(
    img: &mut RgbImage,
    font: &Font,
    (x, y): (i32, i32),
    size: f32,
    text: &str,
    rgb: [u8; 3],
) {
    let scale = PxScale::from(size);
    let f = font.face.as_scaled(scale);
    let baseline = y as f32 + f.ascent();
    let mut pen = x as f32;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            pen += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen, baseline));
        if let Some(outline) = font.face.outline_glyph(glyph) {
            let b = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = b.min.x as i64 + i64::from(gx);
                let py = b.min.y as i64 + i64::from(gy);
                let (Ok(px), Ok(py)) = (u32::try_from(px), u32::try_from(py)) else {
                    return;
                };
                if px >= img.width() || py >= img.height() {
                    return;
                }
                let a = coverage.clamp(0.0, 1.0);
                let p = img.get_pixel_mut(px, py);
                for (ch, target) in p.0.iter_mut().zip(rgb) {
                    *ch = (f32::from(*ch) * (1.0 - a) + f32::from(target) * a).round() as u8;
                }
            });
        }
        pen += f.h_advance(id);
        prev = Some(id);
    }
}

/// HJ 633 grade bands: (upper AQI bound, colour, label).
pub(super) const GRADES: [(f64, RGBColor, &str); 6] = [
    (50.0, RGBColor(0, 228, 0), "优 I"),
    (100.0, RGBColor(255, 255, 0), "良 II"),
    (150.0, RGBColor(255, 126, 0), "轻度 III"),
    (200.0, RGBColor(255, 0, 0), "中度 IV"),
    (300.0, RGBColor(153, 0, 76), "重度 V"),
    (500.0, RGBColor(126, 0, 35), "严重 VI"),
];

pub(super) fn grade_colour(aqi: f64) -> RGBColor {
    GRADES
        .iter()
        .find(|(upper, _, _)| aqi <= *upper)
        .map(|g| g.1)
        .unwrap_or(GRADES[5].1)
}

/// The colour of a tone (indicator standing, water verdict).
pub fn tone_colour(t: Tone) -> RGBColor {
    match t {
        Tone::Good => RGBColor(26, 152, 80),
        Tone::Warn => RGBColor(224, 130, 20),
        Tone::Bad => RGBColor(215, 48, 39),
        Tone::None => EMPTY_GREY,
    }
}

pub(super) const UNIT_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// The colour of "no data" messages and secondary text.
pub const EMPTY_GREY: RGBColor = RGBColor(110, 110, 110);

/// The picture's size and bands, top to bottom.
pub const WIDTH: u32 = 1600;
pub const HEIGHT: u32 = 1840;
pub const HEADER_HEIGHT: u32 = 230;
pub const AQI_HEIGHT: u32 = 380;
pub const PM_HEIGHT: u32 = 310;
pub const CEMS_TOP: u32 = HEADER_HEIGHT + AQI_HEIGHT + PM_HEIGHT;
pub const CEMS_HEIGHT: u32 = 440;
pub const LISTS_TOP: u32 = CEMS_TOP + CEMS_HEIGHT;
/// Width of the legend column right of each CEMS plot: legends never cover the data.
pub const LEGEND_WIDTH: u32 = 240;
/// Room above a chart for its title.
const CAPTION: u32 = 40;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draw the briefing as PNG bytes.
pub fn render_png_bytes(data: &ReportData, font: &Font) -> Result<Vec<u8>, ReportError> {
    let draw_err = |message: String| ReportError::Draw {
        path: PathBuf::from("(memory)"),
        message,
    };
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    let mut labels = Labels::default();
    draw(data, font, &mut buf, &mut labels).map_err(|e| draw_err(e.to_string()))?;
    let mut img = RgbImage::from_raw(WIDTH, HEIGHT, buf)
        .ok_or_else(|| draw_err("buffer of the wrong size".into()))?;
    for l in labels.0 {
        let text = match l.max_width {
            Some(w) => fit(font, l.size, &l.text, w),
            None => l.text,
        };
        put_text(
            &mut img,
            font,
            (l.x, l.y),
            l.size,
            &text,
            [l.rgb.0, l.rgb.1, l.rgb.2],
        );
    }
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut png),
            image::ImageOutputFormat::Png,
        )
        .map_err(|e| draw_err(e.to_string()))?;
    Ok(png)
}

/// Draw the briefing to `path` (a PNG of [`WIDTH`] × [`HEIGHT`]).
pub fn render_png(data: &ReportData, font: &Font, path: &Path) -> Result<(), ReportError> {
    let png = render_png_bytes(data, font).map_err(|e| match e {
        ReportError::Draw { message, .. } => ReportError::Draw {
            path: path.to_path_buf(),
            message,
        },
        e => e,
    })?;
    std::fs::write(path, png).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn origin(area: &Area) -> (i32, i32) {
    area.get_base_pixel()
}

fn draw(data: &ReportData, font: &Font, buf: &mut [u8], labels: &mut Labels) -> DrawResult {
    let root = BitMapBackend::with_buffer(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, rest) = root.split_vertically(HEADER_HEIGHT);
    draw_header(data, font, &header, labels)?;
    let (aqi, rest) = rest.split_vertically(AQI_HEIGHT);
    draw_aqi(data, &aqi, labels)?;
    let (pm, rest) = rest.split_vertically(PM_HEIGHT);
    draw_pm(data, &pm, labels)?;
    let (cems, lists) = rest.split_vertically(CEMS_HEIGHT);
    let halves = cems.split_evenly((1, 2));
    for (area, q) in halves.iter().zip(POLLUTANTS) {
        draw_cems(data, q, area, labels)?;
    }
    let lists = lists.split_evenly((1, 2));
    draw_water(data, &lists[0], labels)?;
    draw_alerts(data, &lists[1], labels)?;
    root.present()?;
    Ok(())
}

fn draw_header(data: &ReportData, font: &Font, area: &Area, labels: &mut Labels) -> DrawResult {
    labels.at(
        (20, 12),
        34.0,
        format!(
            "涧西区环境日报 / Jianxi district daily briefing  {}",
            data.day
        ),
        BLACK,
    );
    // The headline AQI with a swatch in its grade's colour.
    let aqi = data
        .today()
        .and_then(|t| t.aqi)
        .or_else(|| data.latest_hour.as_ref().and_then(|(_, h)| h.aqi));
    let mut x = 20;
    if let Some(a) = aqi {
        area.draw(&Rectangle::new(
            [(20, 62), (44, 86)],
            grade_colour(a).filled(),
        ))?;
        area.draw(&Rectangle::new([(20, 62), (44, 86)], BLACK.stroke_width(1)))?;
        x = 54;
    }
    labels.clipped(
        (x, 60),
        22.0,
        data.aqi_line(),
        BLACK,
        (WIDTH as i32 - x - 20) as f32,
    );
    labels.at(
        (20, 96),
        20.0,
        format!("颗粒物 / PM: {}", data.pm_line()),
        BLACK,
    );
    // Each indicator: a swatch and its standing in its tone's colour.
    let mut y = 128;
    for i in &data.indicators {
        let (zh, en, tone) = status_words(i.status);
        let c = tone_colour(tone);
        area.draw(&Rectangle::new([(20, y + 3), (36, y + 19)], c.filled()))?;
        let line = ReportData::indicator_line(i);
        let status = format!("{zh} / {en}");
        let body = line
            .trim_end_matches(status.as_str())
            .trim_end()
            .to_string();
        labels.at((46, y), 18.0, body.clone(), BLACK);
        let w = text_width(font, 18.0, &body) as i32;
        labels.at((46 + w + 12, y), 18.0, status, c);
        y += 26;
    }
    if let Some(a) = data.affordable_non_good_days {
        let c = tone_colour(if a < 0.0 {
            Tone::Bad
        } else if a <= 10.0 {
            Tone::Warn
        } else {
            Tone::Good
        });
        labels.at(
            (46, y),
            18.0,
            format!("剩余可超标天数 / non-good days the year can still afford: {a:.0}"),
            c,
        );
    }
    Ok(())
}

fn draw_aqi(data: &ReportData, area: &Area, labels: &mut Labels) -> DrawResult {
    let (ox, oy) = origin(area);
    labels.at(
        (ox + 20, oy + 8),
        22.0,
        "区域日 AQI 与分级 / District daily AQI against the HJ 633 grades",
        BLACK,
    );
    let max = data
        .aqi_days
        .iter()
        .filter_map(|d| d.aqi)
        .fold(150.0_f64, f64::max);
    let y_top = GRADES
        .iter()
        .map(|g| g.0)
        .find(|u| *u >= max)
        .unwrap_or(500.0);
    let n = data.aqi_days.len() as i32;
    // Columns right of the last day hold the grade names.
    let label_columns = 3;
    let days: Vec<NaiveDate> = data.aqi_days.iter().map(|d| d.day).collect();
    let mut chart = day_chart(area, &days, n + label_columns, y_top)?;
    let mut lower = 0.0;
    for (upper, colour, label) in GRADES {
        if lower >= y_top {
            break;
        }
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0, lower), (n + label_columns, upper.min(y_top))],
            colour.mix(0.18).filled(),
        )))?;
        let (px, py) = chart.backend_coord(&(n, (lower + upper.min(y_top)) / 2.0));
        labels.at((px + 12, py - 9), 15.0, label, BLACK);
        lower = upper;
    }
    chart.draw_series(data.aqi_days.iter().enumerate().filter_map(|(i, d)| {
        d.aqi.map(|aqi| {
            let x = i as i32;
            Rectangle::new([(x, 0.0), (x + 1, aqi)], grade_colour(aqi).filled())
        })
    }))?;
    chart.draw_series(data.aqi_days.iter().enumerate().filter_map(|(i, d)| {
        d.aqi.map(|aqi| {
            Rectangle::new(
                [(i as i32, 0.0), (i as i32 + 1, aqi)],
                BLACK.stroke_width(1),
            )
        })
    }))?;
    if data.aqi_days.iter().all(|d| d.aqi.is_none()) {
        let (px, py) = chart.backend_coord(&(n / 4, y_top / 2.0));
        labels.at(
            (px, py),
            22.0,
            "近 30 日无区域日 AQI / no district daily AQI in these 30 days",
            EMPTY_GREY,
        );
    }
    Ok(())
}

/// A PM series: its name, colour and (day index, value) points.
type PmSeries<'a> = (&'a str, RGBColor, Vec<(i32, f64)>);

type DayChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordi32, plotters::coord::types::RangedCoordf64>,
>;

/// A chart with one column per day (`columns` ≥ the days; the rest stay unlabelled) from 0 to
/// `y_top`, its mesh drawn: what the AQI and PM charts share.
fn day_chart<'a, 'b>(
    area: &'a Area<'b>,
    days: &[NaiveDate],
    columns: i32,
    y_top: f64,
) -> Result<DayChart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_top(CAPTION)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0..columns, 0.0..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(15)
        .x_label_formatter(&|i| {
            days.get(*i as usize)
                .map(|d| d.format("%m-%d").to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FAMILY, 14))
        .draw()?;
    Ok(chart)
}

const PM25_COLOUR: RGBColor = RGBColor(120, 60, 160);
const PM10_COLOUR: RGBColor = RGBColor(150, 110, 40);

fn draw_pm(data: &ReportData, area: &Area, labels: &mut Labels) -> DrawResult {
    let (ox, oy) = origin(area);
    labels.at(
        (ox + 20, oy + 8),
        22.0,
        "区域颗粒物日均值 / District PM, 24 h means, µg/m³ (虚线: GB 3095 二级 / dashed: grade II)",
        BLACK,
    );
    let values: Vec<f64> = data
        .pm_days
        .iter()
        .flat_map(|p| [p.pm25, p.pm10])
        .flatten()
        .collect();
    if values.is_empty() {
        labels.at(
            (ox + 40, oy + (PM_HEIGHT / 2) as i32),
            22.0,
            "近 30 日无区域颗粒物日均值 / no district PM daily means in these 30 days",
            EMPTY_GREY,
        );
        return Ok(());
    }
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let max = values
        .iter()
        .copied()
        .chain(super::PM_LIMITS.iter().map(|l| l.1))
        .fold(0.0_f64, f64::max)
        * 1.15;
    let n = data.pm_days.len() as i32;
    let days: Vec<NaiveDate> = data.pm_days.iter().map(|d| d.day).collect();
    let mut chart = day_chart(&plot, &days, n, max)?;
    let series: [PmSeries; 2] = [
        (
            "PM2.5",
            PM25_COLOUR,
            data.pm_days
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.pm25.map(|v| (i as i32, v)))
                .collect(),
        ),
        (
            "PM10",
            PM10_COLOUR,
            data.pm_days
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.pm10.map(|v| (i as i32, v)))
                .collect(),
        ),
    ];
    for (k, (name, colour, points)) in series.iter().enumerate() {
        let limit = super::PM_LIMITS[k].1;
        chart.draw_series(DashedLineSeries::new(
            [(0, limit), (n, limit)],
            10,
            6,
            colour.stroke_width(2),
        ))?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))?;
        chart.draw_series(points.iter().map(|p| {
            let style = if p.1 > limit {
                RED.filled()
            } else {
                colour.filled()
            };
            Circle::new(*p, 4, style)
        }))?;
        let over = points.iter().filter(|p| p.1 > limit).count();
        let y = 56 + 26 * k as i32;
        legend.draw(&PathElement::new([(8, y), (36, y)], colour.stroke_width(3)))?;
        let (lx, ly) = origin(&legend);
        labels.at(
            (lx + 42, ly + y - 10),
            15.0,
            format!("{name}  超二级 {over} 天 / days over {limit:.0}"),
            BLACK,
        );
    }
    Ok(())
}

fn draw_cems(data: &ReportData, pollutant: &str, area: &Area, labels: &mut Labels) -> DrawResult {
    let (ox, oy) = origin(area);
    labels.at(
        (ox + 16, oy + 8),
        20.0,
        format!("{pollutant} 小时折算浓度 / hourly corrected, mg/m³ (虚线: 限值 / dashed: limit)"),
        BLACK,
    );
    let empty = std::collections::BTreeMap::new();
    let units = data.cems.get(pollutant).unwrap_or(&empty);
    if units.is_empty() {
        // An explicit empty state, not an empty axis.
        labels.at(
            (ox + 24, oy + (CEMS_HEIGHT / 2) as i32),
            22.0,
            format!("{pollutant}：当日无机组小时数据 / no unit reported an hour this day"),
            EMPTY_GREY,
        );
        return Ok(());
    }
    let (w, _) = area.dim_in_pixel();
    let (plot, legend) = area.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
    let limit = units.values().flatten().find_map(|p| p.limit);
    let max = units
        .values()
        .flatten()
        .map(|p| p.corrected)
        .chain(limit)
        .fold(1.0_f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .margin_top(CAPTION)
        .x_label_area_size(50)
        .y_label_area_size(50)
        .build_cartesian_2d(0u32..24u32, 0.0..max)?;
    chart
        .configure_mesh()
        .x_labels(12)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FAMILY, 14))
        .draw()?;
    let (px, py) = chart.backend_coord(&(6u32, 0.0));
    labels.at(
        (px, py + 24),
        14.0,
        "时 / hour (CST, 整点结束 / labelled by its end)",
        EMPTY_GREY,
    );
    if let Some(l) = limit {
        chart.draw_series(DashedLineSeries::new(
            [(0u32, l), (24u32, l)],
            10,
            6,
            RED.stroke_width(2),
        ))?;
    }
    let (lx, ly) = origin(&legend);
    for (i, (unit, points)) in units.iter().enumerate() {
        let colour = UNIT_COLOURS[i % UNIT_COLOURS.len()];
        chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p.hour, p.corrected)),
            colour.stroke_width(2),
        ))?;
        // Filled: a valid hour (HJ 75); hollow: too few valid minutes.
        chart.draw_series(points.iter().map(|p| {
            let style = if p.valid {
                colour.filled()
            } else {
                colour.stroke_width(1)
            };
            Circle::new((p.hour, p.corrected), 4, style)
        }))?;
        // The legend, in its own column: the unit's name, and how many hours exceeded.
        let y = 56 + 26 * i as i32;
        legend.draw(&PathElement::new([(8, y), (36, y)], colour.stroke_width(3)))?;
        let over = points
            .iter()
            .filter(|p| p.valid && p.limit.is_some_and(|l| p.corrected > l))
            .count();
        let name = data
            .unit_names
            .get(unit)
            .cloned()
            .unwrap_or_else(|| unit.clone());
        let tone = if over > 0 { RED } else { BLACK };
        labels.clipped(
            (lx + 42, ly + y - 10),
            15.0,
            format!("{name}  超限 {over} h"),
            tone,
            (LEGEND_WIDTH - 46) as f32,
        );
    }
    Ok(())
}

/// Rows of the lists at the bottom.
const ROW: i32 = 40;

fn draw_water(data: &ReportData, area: &Area, labels: &mut Labels) -> DrawResult {
    let (ox, oy) = origin(area);
    let (w, h) = area.dim_in_pixel();
    labels.at(
        (ox + 20, oy + 8),
        22.0,
        "水环境 / Water, daily verdicts",
        BLACK,
    );
    let mut y = 48;
    if let Some(t) = data.treatment_percent {
        labels.at(
            (ox + 20, oy + y),
            17.0,
            format!("污水集中处理率 / sewage treated: {t:.1}%"),
            BLACK,
        );
        y += 28;
    }
    if data.water.is_empty() {
        labels.at(
            (ox + 24, oy + y + 20),
            20.0,
            "当日无水质日报 / no water verdict this day",
            EMPTY_GREY,
        );
        return Ok(());
    }
    let fits = ((h as i32 - y - ROW) / ROW).max(1) as usize;
    list(area, labels, &data.water, y, fits, "处", w, water_row)
}

/// Rows of a list from `y`, at most `fits`; the last row says how many more there are.
#[allow(clippy::too_many_arguments)]
fn list<T>(
    area: &Area,
    labels: &mut Labels,
    items: &[T],
    mut y: i32,
    fits: usize,
    measure_zh: &str,
    w: u32,
    row: fn(&Area, &mut Labels, &T, i32, u32) -> DrawResult,
) -> DrawResult {
    let (ox, oy) = origin(area);
    for (k, item) in items.iter().enumerate() {
        if k + 1 == fits && items.len() > fits {
            let more = items.len() - k;
            labels.at(
                (ox + 46, oy + y),
                16.0,
                format!("…… 另有 {more} {measure_zh} / {more} more"),
                EMPTY_GREY,
            );
            break;
        }
        row(area, labels, item, y, w)?;
        y += ROW;
    }
    Ok(())
}

fn water_row(area: &Area, labels: &mut Labels, r: &WaterRow, y: i32, w: u32) -> DrawResult {
    let (ox, oy) = origin(area);
    let c = tone_colour(r.tone);
    area.draw(&Rectangle::new([(20, y + 3), (34, y + 17)], c.filled()))?;
    labels.clipped((ox + 42, oy + y), 17.0, r.place.clone(), BLACK, 300.0);
    labels.clipped(
        (ox + 350, oy + y),
        17.0,
        format!("{} / {}", r.verdict_zh, r.verdict_en),
        c,
        (w as i32 - 370) as f32,
    );
    let values: Vec<String> = r
        .values
        .iter()
        .map(|(k, v, places)| format!("{k} {v:.*}", *places as usize))
        .collect();
    if !values.is_empty() {
        labels.clipped(
            (ox + 42, oy + y + 20),
            13.0,
            values.join("  "),
            EMPTY_GREY,
            (w as i32 - 60) as f32,
        );
    }
    Ok(())
}

fn draw_alerts(data: &ReportData, area: &Area, labels: &mut Labels) -> DrawResult {
    let (ox, oy) = origin(area);
    let (w, h) = area.dim_in_pixel();
    labels.at(
        (ox + 20, oy + 8),
        22.0,
        format!("告警 / Alerts firing: {}", data.alerts.len()),
        BLACK,
    );
    if data.alerts.is_empty() {
        labels.at(
            (ox + 24, oy + 68),
            20.0,
            "当前无告警 / no alert is firing",
            EMPTY_GREY,
        );
        return Ok(());
    }
    let fits = (((h as i32 - 48 - ROW) / ROW).max(1) as usize).min(super::MAX_ALERT_LINES);
    list(area, labels, &data.alerts, 48, fits, "条", w, alert_row)
}

fn alert_row(area: &Area, labels: &mut Labels, a: &AlertRow, y: i32, w: u32) -> DrawResult {
    let (ox, oy) = origin(area);
    let c = match a.severity.as_str() {
        "critical" => tone_colour(Tone::Bad),
        "warning" => tone_colour(Tone::Warn),
        _ => tone_colour(Tone::None),
    };
    area.draw(&Rectangle::new([(20, y + 3), (34, y + 17)], c.filled()))?;
    let mark = if a.silenced {
        "〔已静默 / silenced〕"
    } else {
        ""
    };
    labels.clipped(
        (ox + 42, oy + y),
        16.0,
        format!("{mark}{}", a.summary_zh),
        BLACK,
        (w as i32 - 60) as f32,
    );
    labels.clipped(
        (ox + 42, oy + y + 19),
        13.0,
        a.summary_en.clone(),
        EMPTY_GREY,
        (w as i32 - 60) as f32,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DayAqi, DayPm, HourPoint, Indicator};
    use crate::standards::results::IndicatorStatus;
    use chrono::NaiveDate;
    use std::collections::BTreeMap;

    fn font() -> Font {
        load_font(None).expect("a CJK font (scripts/test installs fonts-wqy-microhei)")
    }

    #[test]
    fn grade_colours_follow_the_bands() {
        assert_eq!(grade_colour(50.0), GRADES[0].1);
        assert_eq!(grade_colour(51.0), GRADES[1].1);
        assert_eq!(grade_colour(301.0), GRADES[5].1);
        assert_eq!(grade_colour(900.0), GRADES[5].1);
    }

    /// Columns of `img` with ink (any pixel darker than mid-grey), as runs [start, end).
    fn ink_runs(img: &RgbImage) -> Vec<(u32, u32)> {
        let inked: Vec<bool> = (0..img.width())
            .map(|x| (0..img.height()).any(|y| img.get_pixel(x, y).0[0] < 128))
            .collect();
        let mut runs = Vec::new();
        let mut start = None;
        for (x, on) in inked.iter().enumerate() {
            match (on, start) {
                (true, None) => start = Some(x as u32),
                (false, Some(s)) => {
                    runs.push((s, x as u32));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push((s, img.width()));
        }
        runs
    }

    /// The spacing the issue saw ("日 报", "J ianxi") came from glyphs drawn without their side
    /// bearings. Set by the font's metrics, the gap between neighbouring glyphs' ink is what the
    /// font designs: far under a third of an em in these words, and the ink ends where the
    /// advances say the word ends.
    #[test]
    fn text_is_spaced_by_the_fonts_metrics() {
        let f = font();
        for word in ["日报", "Jianxi", "HJ633", "限值"] {
            let mut img = RgbImage::from_pixel(400, 80, image::Rgb([255, 255, 255]));
            put_text(&mut img, &f, (10, 10), 40.0, word, [0, 0, 0]);
            let runs = ink_runs(&img);
            assert!(runs.len() >= 2, "{word}: {runs:?}");
            let widest_gap = runs.windows(2).map(|w| w[1].0 - w[0].1).max().unwrap();
            assert!(
                widest_gap < 40 / 4,
                "{word}: a gap of {widest_gap} px at 40 px: {runs:?}"
            );
            let end = runs.last().unwrap().1 as f32;
            let width = text_width(&f, 40.0, word);
            assert!(
                (end - 10.0 - width).abs() < 40.0 * 0.2,
                "{word}: ink ends at {end}, advances say {}",
                10.0 + width
            );
        }
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let f = font();
        let long = "大唐洛阳热电有限责任公司 #1 机组 SO2 小时均值超过超低排放限值".repeat(3);
        let cut = fit(&f, 16.0, &long, 300.0);
        assert!(cut.ends_with('…'));
        assert!(text_width(&f, 16.0, &cut) <= 300.0);
        assert_eq!(fit(&f, 16.0, "短", 300.0), "短");
    }

    fn sample(day: NaiveDate) -> ReportData {
        let point = |hour, corrected| HourPoint {
            hour,
            corrected,
            limit: Some(35.0),
            valid: true,
        };
        let mut so2 = BTreeMap::new();
        so2.insert(
            "dt-1".to_string(),
            (1..=24)
                .map(|h| point(h, 20.0 + h as f64))
                .collect::<Vec<_>>(),
        );
        so2.insert(
            "sy-1".to_string(),
            (1..=24).map(|h| point(h, 10.0)).collect::<Vec<_>>(),
        );
        let days: Vec<NaiveDate> = (0..30).rev().map(|b| day - chrono::Days::new(b)).collect();
        ReportData {
            integrity: Vec::new(),
            day,
            aqi_days: days
                .iter()
                .map(|d| DayAqi {
                    day: *d,
                    aqi: Some(80.0),
                    grade: Some("II".into()),
                    category_zh: Some("良".into()),
                    primary: vec!["PM2.5".into()],
                })
                .collect(),
            cems: [("SO2".to_string(), so2)].into(),
            indicators: vec![
                Indicator {
                    id: "air_good_days_rate".into(),
                    name_zh: "空气质量二级以上天数比例".into(),
                    actual: Some(31.0),
                    target: 80.0,
                    comparison: ">=".into(),
                    unit: "%".into(),
                    status: IndicatorStatus::Missed,
                },
                Indicator {
                    id: "sewage_treatment_rate".into(),
                    name_zh: "城市污水集中处理率".into(),
                    actual: Some(97.4),
                    target: 96.0,
                    comparison: ">=".into(),
                    unit: "%".into(),
                    status: IndicatorStatus::OnTrack,
                },
            ],
            affordable_non_good_days: Some(-9.0),
            latest_hour: None,
            unit_names: BTreeMap::new(),
            pm_days: days
                .iter()
                .map(|d| DayPm {
                    day: *d,
                    pm25: Some(60.0),
                    pm10: Some(90.0),
                })
                .collect(),
            latest_hour_pm: None,
            water: Vec::new(),
            treatment_percent: None,
            alerts: Vec::new(),
        }
        .with_unit_names([("dt-1".to_string(), "大唐洛热 #1 机组".to_string())].into())
    }

    fn count(
        img: &RgbImage,
        x: std::ops::Range<u32>,
        y: std::ops::Range<u32>,
        c: RGBColor,
    ) -> usize {
        img.enumerate_pixels()
            .filter(|(px, py, p)| x.contains(px) && y.contains(py) && p.0 == [c.0, c.1, c.2])
            .count()
    }

    /// The picture's regions: each unit's legend sits in the column right of its plot; a
    /// pollutant, water or alerts without data says so instead of drawing an empty axis; each
    /// indicator's standing is drawn in its tone's colour.
    #[test]
    fn legends_outside_the_plots_empty_states_and_coloured_standings() {
        let f = font();
        let data = sample(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        let png = render_png_bytes(&data, &f).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        let cems = CEMS_TOP..CEMS_TOP + CEMS_HEIGHT;
        // SO2 on the left half, NOx on the right.
        let legend = WIDTH / 2 - LEGEND_WIDTH..WIDTH / 2;
        for c in &UNIT_COLOURS[..2] {
            assert!(
                count(&img, legend.clone(), cems.clone(), *c) > 40,
                "legend entry {c:?} in its column"
            );
        }
        assert!(
            count(
                &img,
                0..WIDTH / 2 - LEGEND_WIDTH,
                cems.clone(),
                UNIT_COLOURS[0]
            ) > 100
        );
        // NOx has no data: its half carries the grey message, and no axis.
        assert!(count(&img, WIDTH / 2..WIDTH, cems.clone(), EMPTY_GREY) > 0);
        let below_title = CEMS_TOP + CAPTION..CEMS_TOP + CEMS_HEIGHT;
        assert_eq!(
            count(&img, WIDTH / 2..WIDTH, below_title.clone(), BLACK),
            0,
            "no axis drawn for NOx"
        );
        // …while SO2's half has its axes (black lines).
        assert!(count(&img, 0..WIDTH / 2, below_title, BLACK) > 200);
        // The missed indicator's swatch is red, the one on track green (header band).
        let header = 0..HEADER_HEIGHT;
        assert!(count(&img, 18..40, header.clone(), tone_colour(Tone::Bad)) > 100);
        assert!(count(&img, 18..40, header, tone_colour(Tone::Good)) > 100);
        // The PM chart draws both series in its band.
        let pm = HEADER_HEIGHT + AQI_HEIGHT..CEMS_TOP;
        assert!(count(&img, 0..WIDTH - LEGEND_WIDTH, pm.clone(), PM25_COLOUR) > 100);
        assert!(count(&img, 0..WIDTH - LEGEND_WIDTH, pm, PM10_COLOUR) > 100);
        // Water and alerts are empty: both say so in grey; nothing else is drawn there but text.
        let lists = LISTS_TOP..HEIGHT;
        assert!(count(&img, 0..WIDTH / 2, lists.clone(), EMPTY_GREY) > 0);
        assert!(count(&img, WIDTH / 2..WIDTH, lists, EMPTY_GREY) > 0);
    }

    #[test]
    fn water_and_alert_rows_carry_their_tone() {
        let f = font();
        let mut data = sample(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        data.water = vec![WaterRow {
            sensor: "jianhe-quality".into(),
            place: "涧河断面".into(),
            verdict_zh: "劣V类 (GB 3838)".into(),
            verdict_en: "class worse than V".into(),
            tone: Tone::Bad,
            values: vec![("NH3-N".into(), 2.31, 2)],
        }];
        data.alerts = vec![AlertRow {
            severity: "critical".into(),
            summary_zh: "大唐洛热 #1 机组 SO2 超限".into(),
            summary_en: "Datang #1 SO2 over the limit".into(),
            fired_at_ms: Some(0),
            silenced: false,
        }];
        let png = render_png_bytes(&data, &f).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        let lists = LISTS_TOP..HEIGHT;
        let bad = tone_colour(Tone::Bad);
        // Swatches (14 × 14) plus the verdict's letters.
        assert!(count(&img, 0..WIDTH / 2, lists.clone(), bad) > 150);
        assert!(count(&img, WIDTH / 2..WIDTH, lists, bad) >= 14 * 14);
    }
}
