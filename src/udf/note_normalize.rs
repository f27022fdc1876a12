//! `note_normalize(text)`: a note reduced to what a template leaves the same, so that two copies
//! of one template compare equal whatever numbers were typed into them.
//!
//! The article's 37 stores filled their chronic follow-up log in bulk: "血压130/85，建议低盐饮食"
//! on one day and "血压120/80，建议低盐饮食" on the next. Normalised, both read "血压##建议低盐饮食".

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, coerce, text_type, texts};

const SIGNATURE: &str = "note_normalize(note: text)";

/// What a number becomes. Not a letter or digit, so it is kept as a character of its own (and
/// normalising twice gives the same text).
pub(crate) const NUMBER_MASK: char = '#';

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NoteNormalize {
    signature: Signature,
}

impl NoteNormalize {
    pub fn new() -> NoteNormalize {
        NoteNormalize {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// A full-width form (U+FF01..U+FF5E, what Chinese input methods type for `Ａ`, `１`, `，`) as its
/// ASCII character, the ideographic space (U+3000) as a space; anything else as it is.
pub(crate) fn half_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// `c` in lower case when that is one character (it is for every script a note is written in);
/// otherwise `c` itself, so that a folded text has as many characters as the original.
pub(crate) fn lower(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Chinese, Japanese and Korean characters, which are written without spaces between words.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}'      // Hiragana, Katakana
        | '\u{3400}'..='\u{4DBF}'    // CJK Extension A
        | '\u{4E00}'..='\u{9FFF}'    // CJK Unified Ideographs
        | '\u{AC00}'..='\u{D7AF}'    // Hangul syllables
        | '\u{F900}'..='\u{FAFF}'    // CJK Compatibility Ideographs
        | '\u{20000}'..='\u{2FFFF}') // CJK Extensions B..
}

/// A letter of a script that separates words with spaces.
fn is_word_letter(c: char) -> bool {
    c.is_alphabetic() && !is_cjk(c)
}

/// The normal form of a note:
/// 1. full-width forms become half-width, then letters become lower case;
/// 2. every number (a run of digits, with `.`, `,` or `:` between digits, as in `36.5`, `1,200`
///    or `10:30`) becomes one `#`;
/// 3. everything that is neither a letter, a digit nor `#` (punctuation of every script,
///    symbols, spaces) is dropped, except that one space is kept between two words of a script
///    that spaces its words (`send the proposal` keeps its spaces; `血压 130` becomes `血压#`).
///
/// Normalising a normalised text gives it back unchanged.
pub(crate) fn normalize(note: &str) -> String {
    let chars: Vec<char> = note.chars().map(|c| lower(half_width(c))).collect();
    let mut out = String::with_capacity(note.len());
    // A separator was skipped since the last character written.
    let mut gap = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_numeric() {
            // The whole number, separators between digits included.
            while i < chars.len()
                && (chars[i].is_numeric()
                    || (matches!(chars[i], '.' | ',' | ':')
                        && i > 0
                        && chars[i - 1].is_numeric()
                        && chars.get(i + 1).is_some_and(|n| n.is_numeric())))
            {
                i += 1;
            }
            out.push(NUMBER_MASK);
            gap = false;
            continue;
        }
        if c.is_alphabetic() || c == NUMBER_MASK {
            if gap && is_word_letter(c) && out.chars().next_back().is_some_and(is_word_letter) {
                out.push(' ');
            }
            out.push(c);
            gap = false;
        } else {
            gap = true;
        }
        i += 1;
    }
    out
}

impl ScalarUDFImpl for NoteNormalize {
    fn name(&self) -> &str {
        "note_normalize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let out: StringArray = texts(&arrays[0]).map(|t| t.map(normalize)).collect();
                Ok(Arc::new(out) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "A note reduced to what copies of one template share: full-width characters \
                 become half-width and letters lower case; every number (digits, with . , or : \
                 between digits) becomes one '#'; punctuation, symbols and spaces are dropped, \
                 except one space between two words of a script that spaces its words. Two \
                 template copies that differ only in their numbers normalise to the same text.",
                "note_normalize(note)",
            )
            .with_argument("note", "Free text, e.g. actions.note.")
            .with_sql_example(
                "SELECT note_normalize('血压130/85，建议低盐饮食。'); -- 血压##建议低盐饮食",
            )
            .build()
        });
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_copies_normalise_alike() {
        assert_eq!(
            normalize("血压130/85，建议低盐饮食。"),
            "血压##建议低盐饮食"
        );
        assert_eq!(normalize("血压 120/80, 建议低盐饮食"), "血压##建议低盐饮食");
        assert_eq!(normalize("ＢＰ１３０／８５　ＯＫ"), "bp##ok");
        assert_eq!(normalize("Temp 36.5°C, 10:30"), "temp#c#");
        assert_eq!(
            normalize("Will send the  Proposal, by Friday!"),
            "will send the proposal by friday"
        );
        assert_eq!(normalize("。，！"), "");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for note in [
            "血压130/85，建议低盐饮食。",
            "Temp 36.5°C, 10:30",
            "a # b 1",
        ] {
            let once = normalize(note);
            assert_eq!(normalize(&once), once, "{note}");
        }
    }
}
