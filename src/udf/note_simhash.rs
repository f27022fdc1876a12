//! `note_simhash(note)`: a 64-bit SimHash signature of a note (Charikar, "Similarity estimation
//! techniques from rounding algorithms", 2002), over the character bigrams of the normalised note.
//!
//! Copies of one template get the same signature whatever numbers were typed into them, so
//! `GROUP BY note_simhash(note)` finds a template across every store of the chain in one pass;
//! notes that differ a little differ in a few bits.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use xxhash_rust::xxh3::xxh3_64;

use super::note_normalize::normalize;
use super::note_similarity::shingles;
use super::{DOC_SECTION, coerce, text_type, texts};

const SIGNATURE: &str = "note_simhash(note: text)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NoteSimhash {
    signature: Signature,
}

impl NoteSimhash {
    pub fn new() -> NoteSimhash {
        NoteSimhash {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Each shingle (repeats counted) votes +1 on the bits set in its XXH3-64 hash and -1 on the
/// others; a bit of the signature is set when its vote is positive (a tie is 0). `None` for a
/// note that normalises to nothing. The 64 bits are returned as a signed integer.
pub(crate) fn simhash(note: &str) -> Option<i64> {
    let shingles = shingles(&normalize(note));
    if shingles.is_empty() {
        return None;
    }
    let mut votes = [0i64; 64];
    for shingle in &shingles {
        let hash = xxh3_64(shingle.as_bytes());
        for (bit, vote) in votes.iter_mut().enumerate() {
            *vote += if hash >> bit & 1 == 1 { 1 } else { -1 };
        }
    }
    let bits = votes
        .iter()
        .enumerate()
        .filter(|(_, vote)| **vote > 0)
        .fold(0u64, |bits, (bit, _)| bits | 1 << bit);
    Some(bits as i64)
}

impl ScalarUDFImpl for NoteSimhash {
    fn name(&self) -> &str {
        "note_simhash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let out: Int64Array = texts(&arrays[0]).map(|t| simhash(t?)).collect();
                Ok(Arc::new(out) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "A 64-bit SimHash of the note's character bigrams after note_normalize (each \
                 bigram, repeats counted, votes for the bits of its XXH3-64 hash; a bit is set \
                 when its vote is positive), as a BIGINT. Copies of one template have the same \
                 signature whatever their numbers, so GROUP BY note_simhash(note) finds a \
                 template across stores. NULL when the note is NULL or normalises to nothing.",
                "note_simhash(note)",
            )
            .with_argument("note", "Free text, e.g. actions.note.")
            .with_sql_example(
                "SELECT note_simhash(note) AS template, count(DISTINCT store_id) AS stores, min(note) AS example\n\
                 FROM actions WHERE action_type = 'chronic_followup'\n\
                 GROUP BY 1 HAVING count(DISTINCT store_id) > 1 ORDER BY stores DESC",
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
    fn a_repeated_shingle_outvotes_the_others() {
        let hash = |s: &str| xxh3_64(s.as_bytes()) as i64;
        // One shingle: the signature is its hash.
        assert_eq!(simhash("ab"), Some(hash("ab")));
        // ab, ba, ab: ab wins every bit.
        assert_eq!(simhash("abab"), Some(hash("ab")));
        // ab, ba: a bit is set only where both are (a tie is 0).
        assert_eq!(simhash("aba"), Some(hash("ab") & hash("ba")));
        assert_eq!(simhash("血压130/85"), simhash("血压 120／80"));
        assert_eq!(simhash("…"), None);
    }
}
