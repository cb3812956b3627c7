//! What "ignoring case and accents" means where Portico computes it itself: one fold function
//! shared by SQLite's `portico_fold` SQL function, the search values bound against it, and the
//! tests' oracles. MySQL/MariaDB and SQL Server compare through their collations instead.
//!
//! The fold is locale-independent: Unicode compatibility decomposition (NFKD, so ligatures such
//! as `ﬁ` and full-width forms become plain letters), every combining mark dropped
//! (`General_Category=Mark`, so `é` is `e`), then lower case. Letters that carry their mark inside
//! the code point (no decomposition) fold as the Unicode Collation Algorithm compares them at its
//! primary level: `ø`, `đ`, `ł`, `ħ`, `ŧ` as their base letter, `æ`, `œ` and `ß` as `ae`, `oe` and
//! `ss`. Final sigma `ς` is `σ`, as in Unicode case folding. Turkish has no tailoring here: `I`, `ı`,
//! `İ` and `i` all fold to `i`, so a search typed on any keyboard finds every spelling.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The SQL name of `fold` on every SQLite connection Portico opens for reading.
pub const SQL_FUNCTION: &str = "portico_fold";

/// `text` without case or accents: equal folds mean equal under FHIR string search.
pub fn fold(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut folded = String::with_capacity(text.len());
    for ch in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        match ch {
            'Æ' | 'æ' => folded.push_str("ae"),
            'Œ' | 'œ' => folded.push_str("oe"),
            'ß' | 'ẞ' => folded.push_str("ss"),
            'Ø' | 'ø' => folded.push('o'),
            'Đ' | 'đ' => folded.push('d'),
            'Ł' | 'ł' => folded.push('l'),
            'Ħ' | 'ħ' => folded.push('h'),
            'Ŧ' | 'ŧ' => folded.push('t'),
            'ı' => folded.push('i'),
            'ς' => folded.push('σ'),
            other => folded.extend(other.to_lowercase()),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn accents_and_case_fold_away() {
        for (text, folded) in [
            ("Müller", "muller"),
            ("MÜLLER", "muller"),
            ("Peña", "pena"),
            ("García", "garcia"),
            ("Nuñez", "nunez"),
            ("Dvořák", "dvorak"),
            ("Zoë", "zoe"),
            ("Renée", "renee"),
            ("Conceição", "conceicao"),
            ("Smith", "smith"),
            ("O'Brien", "o'brien"),
            ("", ""),
        ] {
            assert_eq!(fold(text), folded, "{text}");
        }
    }

    #[test]
    fn decomposed_and_precomposed_spellings_fold_alike() {
        // "é" as one code point (NFC) and as "e" + COMBINING ACUTE ACCENT (NFD).
        assert_eq!(fold("Ren\u{e9}e"), fold("Rene\u{301}e"));
        assert_eq!(fold("Ren\u{e9}e"), "renee");
    }

    #[test]
    fn compatibility_forms_become_plain_letters() {
        // Ligatures, full-width letters and superscripts decompose under NFKD.
        assert_eq!(fold("\u{fb01}sh"), "fish");
        assert_eq!(fold("\u{fb00}"), "ff");
        assert_eq!(fold("\u{ff2d}\u{ff55}"), "mu");
        assert_eq!(fold("\u{132}sselmeer"), "ijsselmeer");
        assert_eq!(fold("x\u{b2}"), "x2");
        // A full-width percent sign becomes a LIKE wildcard character: the renderer escapes
        // after folding, so it still matches only itself.
        assert_eq!(fold("\u{ff05}"), "%");
    }

    #[test]
    fn letters_without_decomposition_fold_as_collations_compare_them() {
        assert_eq!(fold("Øster"), "oster");
        assert_eq!(fold("Ærø"), "aero");
        assert_eq!(fold("Œuvre"), "oeuvre");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("STRASSE"), fold("Straße"));
        assert_eq!(fold("Łódź"), "lodz");
        assert_eq!(fold("Đurđević"), "durdevic");
    }

    #[test]
    fn turkish_i_has_no_tailoring() {
        // Dotted capital İ decomposes to I + COMBINING DOT ABOVE; dotless ı folds to i.
        assert_eq!(fold("İstanbul"), "istanbul");
        assert_eq!(fold("ISTANBUL"), "istanbul");
        assert_eq!(fold("ılık"), "ilik");
        assert_eq!(fold("Işık"), "isik");
    }

    #[test]
    fn greek_final_sigma_folds_like_sigma() {
        assert_eq!(fold("ΟΔΟΣ"), fold("οδος"));
        assert_eq!(fold("Οδός"), "οδοσ");
    }

    #[test]
    fn other_scripts_lowercase_and_keep_their_letters() {
        assert_eq!(fold("Ольга"), "ольга");
        // Marks go even where a language sees its own letter: Й is И + COMBINING BREVE, as Spanish
        // ñ is n + COMBINING TILDE.
        assert_eq!(fold("Дмитрий"), "дмитрии");
        assert_eq!(fold("中村"), "中村");
    }
}
