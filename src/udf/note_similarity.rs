//! `note_similarity(a, b)`: how much two notes share, as the Jaccard similarity of their
//! character bigrams after [`note_normalize`](super::note_normalize).
//!
//! Character n-grams need no word segmentation, so the same measure works for Chinese and for
//! languages that space their words; bigrams are what Chinese near-duplicate detection usually
//! uses (most words are two characters).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::note_normalize::normalize;
use super::{DOC_SECTION, coerce, text_type, texts};

const SIGNATURE: &str = "note_similarity(a: text, b: text)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NoteSimilarity {
    signature: Signature,
}

impl NoteSimilarity {
    pub fn new() -> NoteSimilarity {
        NoteSimilarity {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The shingles of a normalised note: its character bigrams in order (repeats included), or its
/// one character when it has only one. Empty for an empty text.
pub(crate) fn shingles(normalized: &str) -> Vec<String> {
    let chars: Vec<char> = normalized.chars().collect();
    match chars.len() {
        0 => Vec::new(),
        1 => vec![chars[0].to_string()],
        _ => chars.windows(2).map(|w| w.iter().collect()).collect(),
    }
}

/// |A ∩ B| / |A ∪ B| of the two notes' bigram sets; `None` when either note normalises to nothing.
pub(crate) fn similarity(a: &str, b: &str) -> Option<f64> {
    let set = |note: &str| -> HashSet<String> { shingles(&normalize(note)).into_iter().collect() };
    let (a, b) = (set(a), set(b));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let shared = a.intersection(&b).count();
    Some(shared as f64 / (a.len() + b.len() - shared) as f64)
}

impl ScalarUDFImpl for NoteSimilarity {
    fn name(&self) -> &str {
        "note_similarity"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type, text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let out: Float64Array = texts(&arrays[0])
                    .zip(texts(&arrays[1]))
                    .map(|(a, b)| similarity(a?, b?))
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "The Jaccard similarity (shared / all distinct) of the two notes' character \
                 bigrams after note_normalize: 1.0 for copies of one template whatever their \
                 numbers, near 0 for notes written separately. A one-character note is its one \
                 character. NULL when either note is NULL or normalises to nothing.",
                "note_similarity(a, b)",
            )
            .with_argument("a", "A note.")
            .with_argument("b", "Another note.")
            .with_sql_example(
                "SELECT note_similarity('血压130/85，建议低盐饮食', '血压120/80 建议低盐饮食'); -- 1.0\n\
                 SELECT note_similarity('建议低盐饮食', '建议低脂饮食'); -- 3 shared of 7: 0.428...",
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
    fn bigram_jaccard_by_hand() {
        assert_eq!(
            similarity("血压130/85，建议低盐饮食", "血压120/80 建议低盐饮食"),
            Some(1.0)
        );
        // {ab, bc, cd} and {ab, bc, ce}: 2 shared of 4.
        assert_eq!(similarity("abcd", "ABCE"), Some(0.5));
        // 建议 议低 低盐 盐饮 饮食 / 建议 议低 低脂 脂饮 饮食: 3 shared of 7.
        assert_eq!(similarity("建议低盐饮食", "建议低脂饮食"), Some(3.0 / 7.0));
        assert_eq!(similarity("好", "好"), Some(1.0));
        assert_eq!(similarity("。", "好"), None);
    }
}
