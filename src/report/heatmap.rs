//! The chain-wide heat map: every store x every store action as one PNG that leadership reads at
//! a glance, as the article's retail chain did (1,286 stores x its daily actions).
//!
//! Stores are grouped by team (the worst team first) and, within a group, ordered worst first;
//! each store is a row of cells, one per action type, coloured by the contract's bands: green at
//! 90% of the week's days met or more, yellow at 70% or more, red below, grey without data. A
//! group taller than [`MAX_ROWS`] continues in the next column, so 1,300 stores make a picture
//! about 700 pixels tall with rows of 2 pixels; a small chain gets rows up to 14 pixels with the
//! store ids written beside them. The text in the picture is numbers, ASCII ids and team names
//! the built-in font can draw (a team whose name it cannot draw is "team 1", "team 2"...: the
//! report's caption names every group in any script).

use plotters::prelude::*;
use serde::Serialize;

use super::chart::{encode_png, register_font};
use crate::error::{Error, Result};

/// At most this many store rows in one column of the picture.
pub const MAX_ROWS: usize = 280;
/// The height the rows of the tallest column get, in pixels (before clamping a row to 2..=14).
const ROWS_HEIGHT: usize = 560;
const MARGIN: i32 = 10;
const LEGEND_H: i32 = 38;
const HEADER_H: i32 = 34;
const GAP: i32 = 14;

/// The colours of the bands: those of the report's tables, darker for small cells.
fn colour(band: &str) -> RGBColor {
    match band {
        "green" => RGBColor(52, 168, 83),
        "yellow" => RGBColor(251, 188, 4),
        "red" => RGBColor(234, 67, 53),
        _ => RGBColor(218, 220, 224),
    }
}

/// One store x action cell of the week (`store_action_heatmap`).
#[derive(Debug, Clone, Serialize)]
pub struct HeatCell {
    pub rate: Option<f64>,
    pub days_met: Option<i64>,
    /// `green`, `yellow`, `red`, or `none` without data.
    pub band: String,
}

/// A store's row of cells, one per store action type.
#[derive(Debug, Clone, Serialize)]
pub struct HeatRow {
    pub store_id: String,
    /// The store's team or region (`store_action_heatmap` v2), which the picture groups by.
    pub team: Option<String>,
    /// The store's average rate over the action types: the order of the map, worst first.
    pub rate: f64,
    pub cells: Vec<HeatCell>,
}

/// A group of stores in the picture: its label and its rows, worst first.
pub struct Group<'a> {
    /// What the picture writes over the group's column(s).
    pub label: String,
    pub stores: Vec<&'a HeatRow>,
}

/// The groups of `stores` by team, the worst team (lowest mean rate) first, each store list
/// worst first; stores without a team last, as "no team".
pub fn groups(stores: &[HeatRow]) -> Vec<(Option<String>, Vec<&HeatRow>)> {
    let mut by_team: std::collections::BTreeMap<Option<String>, Vec<&HeatRow>> =
        std::collections::BTreeMap::new();
    for store in stores {
        by_team.entry(store.team.clone()).or_default().push(store);
    }
    let mut groups: Vec<(Option<String>, Vec<&HeatRow>)> = by_team.into_iter().collect();
    for (_, rows) in &mut groups {
        rows.sort_by(|a, b| {
            a.rate
                .total_cmp(&b.rate)
                .then_with(|| a.store_id.cmp(&b.store_id))
        });
    }
    let mean = |rows: &[&HeatRow]| rows.iter().map(|r| r.rate).sum::<f64>() / rows.len() as f64;
    groups.sort_by(|(a_team, a), (b_team, b)| {
        a_team
            .is_none()
            .cmp(&b_team.is_none())
            .then_with(|| mean(a).total_cmp(&mean(b)))
            .then_with(|| a_team.cmp(b_team))
    });
    groups
}

/// Whether the built-in font (DejaVu Sans, as the picture uses it) draws every character.
fn drawable(text: &str) -> bool {
    text.chars().all(|c| (' '..='\u{024F}').contains(&c))
}

/// The label a group gets in the picture: its team's name when the font draws it.
pub fn label(team: Option<&str>, index: usize) -> String {
    match team {
        Some(team) if drawable(team) => team.to_string(),
        Some(_) => format!("team {}", index + 1),
        None => "no team".into(),
    }
}

/// Short column headers: the initials of an action type's words (`member_signup` -> `MS`).
pub fn initials(action_type: &str) -> String {
    let short: String = action_type
        .split(['_', '-', ' '])
        .filter_map(|w| w.chars().next())
        .flat_map(char::to_uppercase)
        .collect();
    if drawable(&short) && !short.is_empty() {
        short
    } else {
        "?".into()
    }
}

/// The picture's geometry: how the groups fall into columns and how big a row and a cell are.
struct Layout {
    /// (group index, first row, rows) per column.
    columns: Vec<(usize, usize, usize)>,
    row_h: i32,
    cell_w: i32,
    label_w: i32,
    width: u32,
    height: u32,
}

fn layout(groups: &[Group], actions: usize) -> Layout {
    let mut columns = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let mut first = 0;
        while first < group.stores.len() {
            let rows = (group.stores.len() - first).min(MAX_ROWS);
            columns.push((g, first, rows));
            first += rows;
        }
    }
    let tallest = columns.iter().map(|c| c.2).max().unwrap_or(1).max(1);
    let row_h = (ROWS_HEIGHT / tallest).clamp(2, 14) as i32;
    let label_w = if row_h >= 10 { 58 } else { 0 };
    let cell_w = if columns.len() > 8 { 12 } else { 24 };
    let column_w = label_w + actions as i32 * cell_w + GAP;
    let width = (2 * MARGIN + columns.len() as i32 * column_w).max(320);
    let height = 2 * MARGIN + LEGEND_H + HEADER_H + tallest as i32 * row_h;
    Layout {
        columns,
        row_h,
        cell_w,
        label_w,
        width: width as u32,
        height: height as u32,
    }
}

/// The heat map of `groups` (see [`groups`] and [`label`]) over `action_types`, as PNG.
pub fn heatmap_png(action_types: &[String], groups: &[Group]) -> Result<Vec<u8>> {
    register_font();
    let layout = layout(groups, action_types.len());
    let mut pixels = vec![255u8; (layout.width * layout.height * 3) as usize];
    draw(&mut pixels, action_types, groups, &layout)
        .map_err(|e| Error::Internal(format!("heat map: {e}")))?;
    encode_png(&pixels, layout.width, layout.height, "heat map")
}

fn draw(
    pixels: &mut [u8],
    action_types: &[String],
    groups: &[Group],
    layout: &Layout,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root =
        BitMapBackend::with_buffer(pixels, (layout.width, layout.height)).into_drawing_area();
    root.fill(&WHITE)?;
    let grey = RGBColor(95, 99, 104);
    let text = ("sans-serif", 11).into_font().color(&grey);
    let bold = ("sans-serif", 12).into_font().color(&RGBColor(32, 33, 36));

    // The legend: the bands and what they mean, and the action types' initials.
    let mut x = MARGIN;
    for (band, meaning) in [
        ("green", ">= 90%"),
        ("yellow", "70-89%"),
        ("red", "< 70%"),
        ("none", "no data"),
    ] {
        root.draw(&Rectangle::new(
            [(x, MARGIN + 2), (x + 10, MARGIN + 12)],
            colour(band).filled(),
        ))?;
        root.draw_text(meaning, &text, (x + 14, MARGIN + 1))?;
        x += 14 + 7 * meaning.len() as i32 + 12;
    }
    let key = action_types
        .iter()
        .map(|a| format!("{} {a}", initials(a)))
        .collect::<Vec<_>>()
        .join("  ");
    if drawable(&key) {
        root.draw_text(&key, &text, (MARGIN, MARGIN + 17))?;
    }

    let column_w = layout.label_w + action_types.len() as i32 * layout.cell_w + GAP;
    let top = MARGIN + LEGEND_H;
    for (c, &(g, first, rows)) in layout.columns.iter().enumerate() {
        let group = &groups[g];
        let x0 = MARGIN + c as i32 * column_w;
        let cells_x = x0 + layout.label_w;
        // The group's name over its first column, its size and red cells over each.
        let red = group
            .stores
            .iter()
            .flat_map(|s| &s.cells)
            .filter(|cell| cell.band == "red")
            .count();
        let head = if first == 0 {
            group.label.clone()
        } else {
            format!("{} (cont.)", group.label)
        };
        root.draw_text(&head, &bold, (x0, top))?;
        if first == 0 {
            use crate::metrics::display::count;
            let size = format!(
                "{}, {}",
                count(group.stores.len(), "store", "stores"),
                count(red, "red cell", "red cells")
            );
            root.draw_text(&size, &text, (x0, top + 13))?;
        }
        for (a, action) in action_types.iter().enumerate() {
            let x = cells_x + a as i32 * layout.cell_w;
            let short = initials(action);
            if layout.cell_w >= 7 * short.len() as i32 {
                root.draw_text(&short, &text, (x, top + 22))?;
            }
        }
        let rows_top = top + HEADER_H;
        for (r, store) in group.stores[first..first + rows].iter().enumerate() {
            let y = rows_top + r as i32 * layout.row_h;
            if layout.label_w > 0 && drawable(&store.store_id) {
                root.draw_text(&store.store_id, &text, (x0, y))?;
            }
            for (a, cell) in store.cells.iter().enumerate() {
                let x = cells_x + a as i32 * layout.cell_w;
                // A pixel of white between cells keeps the columns apart; rows of 2 pixels
                // touch, so that 1,300 stores read as bands of colour.
                let bottom = if layout.row_h > 3 {
                    y + layout.row_h - 1
                } else {
                    y + layout.row_h
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + layout.cell_w - 1, bottom)],
                    colour(&cell.band).filled(),
                ))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: usize, team: Option<&str>, bands: [&str; 3]) -> HeatRow {
        let rate = |b: &str| match b {
            "green" => 1.0,
            "yellow" => 0.75,
            _ => 0.25,
        };
        HeatRow {
            store_id: format!("S{id:04}"),
            team: team.map(String::from),
            rate: bands.iter().map(|b| rate(b)).sum::<f64>() / 3.0,
            cells: bands
                .iter()
                .map(|b| HeatCell {
                    rate: Some(rate(b)),
                    days_met: None,
                    band: b.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn groups_worst_team_first_and_stores_worst_first() {
        let stores = vec![
            store(1, Some("east"), ["green", "green", "green"]),
            store(2, Some("north"), ["red", "green", "green"]),
            store(3, Some("east"), ["red", "red", "yellow"]),
            store(4, None, ["red", "red", "red"]),
            store(5, Some("north"), ["red", "red", "green"]),
        ];
        let groups = groups(&stores);
        let order: Vec<(Option<&str>, Vec<&str>)> = groups
            .iter()
            .map(|(t, rows)| {
                (
                    t.as_deref(),
                    rows.iter().map(|r| r.store_id.as_str()).collect(),
                )
            })
            .collect();
        // north averages (0.5 + 0.75) / 2, east (0.417 + 1) / 2: north first; no team last.
        assert_eq!(
            order,
            vec![
                (Some("north"), vec!["S0005", "S0002"]),
                (Some("east"), vec!["S0003", "S0001"]),
                (None, vec!["S0004"]),
            ]
        );
        assert_eq!(label(Some("华东"), 1), "team 2");
        assert_eq!(initials("high_margin_recommendation"), "HMR");
    }

    #[test]
    fn thirteen_hundred_stores_fit_in_a_picture_leadership_can_read() {
        let bands = ["green", "yellow", "red", "none"];
        let stores: Vec<HeatRow> = (0..1300)
            .map(|i| {
                store(
                    i,
                    Some(["east", "north", "south", "west"][i % 4]),
                    [bands[i % 4], bands[i % 3], bands[i % 2]],
                )
            })
            .collect();
        let grouped = groups(&stores);
        let groups: Vec<Group> = grouped
            .iter()
            .enumerate()
            .map(|(i, (team, rows))| Group {
                label: label(team.as_deref(), i),
                stores: rows.clone(),
            })
            .collect();
        let layout = layout(&groups, 3);
        // 325 stores per team: two columns each, rows of 2 pixels.
        assert_eq!(layout.columns.len(), 8);
        assert_eq!(layout.row_h, 2);
        assert!(
            layout.height <= 700 && layout.width <= 1000,
            "{}x{}",
            layout.width,
            layout.height
        );
        let png = heatmap_png(
            &[
                "member_signup".into(),
                "chronic_followup".into(),
                "x".into(),
            ],
            &groups,
        )
        .unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
