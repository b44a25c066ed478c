"""
Tests for L{phantom_frame.cache.variance}: normalising header values,
L{Variance} itself, and the C{Vary} variants of a L{ResponseCache}.
"""

from __future__ import annotations

from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.cache.entry import CacheEntry
from phantom_frame.cache.variance import Tracked, Variance, normalise, variant_of
from tests.cache.support import NO_HEADERS, CacheTestMixin, headers, ids


#: Spellings of one header value that must make one variant, by header.
EQUIVALENT = [
    ("accept-language", "en-US,fr;q=0.5", "fr;q=0.5, en-us", "EN-us , FR ; Q=0.50", "fr;q=0.500,en-US;q=1"),
    ("accept-language", "en;q=1.0", "en", "en;q=1.", "EN", "en;", ",en,,", " en, ,"),
    ("accept-language", "de;q=0.0, en", "en, de;q=0", "de;q=0., en", "en,de;q=0.000"),
    ("accept-language", "da, en-gb;q=0.8, en;q=0.7", "en;q=0.7,en-GB;q=0.8,da"),
    ("accept-language", "*;q=0.1, en-US, en;q=0.9", "en-us,en;q=0.9,*;q=0.1"),
    ("accept", "text/html, application/xhtml+xml, */*;q=0.8", "*/*;q=0.8,TEXT/HTML,application/XHTML+xml"),
    ("accept", "text/html;Level=1", "text/html; level=1", "Text/HTML ;level=1;q=1"),
    ("accept", "image/avif,image/webp,*/*", "Image/AVIF, image/webp , */*"),
    ("accept", 'text/plain; x="a, b"; q=0.3, text/html', 'text/html, text/plain;x="a, b";q=0.30'),
    ("accept-encoding", "gzip, deflate, br", "GZIP,deflate , BR"),
    ("accept-encoding", "br;q=1.0, gzip;q=0.5, *;q=0", "*;q=0, gzip;q=0.5, br"),
    ("accept-charset", "UTF-8, iso-8859-1;q=0.5", "iso-8859-1;q=0.5,utf-8"),
    ("rsc", " 1 ", "1"),
    ("next-router-state-tree", "%5B%22%22%2C%7B%7D%5D", " %5B%22%22%2C%7B%7D%5D"),
    ("x-mode", "a  b , c", "a b,c"),
]

#: Values that must stay different variants.
DIFFERENT = [
    ("accept-language", "en, fr", "fr, en"),
    ("accept-language", "en;q=0.5, fr;q=0.5", "fr;q=0.5, en;q=0.5"),
    ("accept-language", "en, fr;q=0.5", "en, fr;q=0.4"),
    ("accept-language", "en, fr;q=0.5", "en"),
    ("accept-language", "en", "en-US"),
    ("accept-language", "en;q=0", "en"),
    ("accept-language", "en, en", "en"),
    ("accept-language", "en;q=2", "en"),
    ("accept", 'text/plain;x="A"', 'text/plain;x="a"'),
    ("accept", "text/html;level=1", "text/html;level=2"),
    ("accept", "text/html;level=1", "text/html"),
    ("accept", "image/webp,*/*", "*/*,image/webp"),
    ("accept-encoding", "gzip, br", "br, gzip"),
    ("rsc", "1", "0"),
    ("next-router-state-tree", "%5B%22A%22%5D", "%5B%22a%22%5D"),
    ("next-router-prefetch", "A, b", "b, A"),
    ("x-mode", "A", "a"),
]


class NormaliseTests(SynchronousTestCase):
    """
    Tests for L{normalise} and L{variant_of}: equivalent values make one
    variant, different preferences stay apart.
    """

    def test_none(self) -> None:
        """
        A missing header stays L{None}, distinct from an empty one.
        """
        self.assertIsNone(normalise(None))
        self.assertEqual(normalise(""), "")

    def test_whitespace(self) -> None:
        """
        Whitespace around list items is dropped and runs of spaces inside an
        item become one space; case and item order are kept, for a header
        without a name or any but the negotiation headers.
        """
        self.assertEqual(normalise("gzip ,  br"), "gzip,br")
        self.assertEqual(normalise("  en-GB,\tfr ;q=0.5 "), "en-GB,fr ;q=0.5")
        self.assertEqual(normalise("a   b"), "a b")
        self.assertEqual(normalise("B, a"), "B,a")
        self.assertEqual(normalise(" 1 ", "rsc"), "1")
        self.assertEqual(normalise("B , a;q=0.5", "x-list"), "B,a;q=0.5")

    def test_variantOf(self) -> None:
        """
        L{variant_of} gives the normalised value of each named header, as
        its name says, in the order of the names, L{None} for those missing.
        """
        lookup = headers(accept_language="en , fr", x_mode="a  b")
        self.assertEqual(
            variant_of(("x-mode", "accept-language", "cookie"), lookup),
            ("a b", "en,fr", None),
        )
        self.assertEqual(variant_of((), lookup), ())
        lookup = headers(accept_language="fr;q=0.5, EN", rsc="A")
        self.assertEqual(variant_of(("accept-language", "rsc"), lookup), ("en,fr;q=0.5", "A"))

    def test_equivalent(self) -> None:
        """
        Values that differ in whitespace, in the case of tokens and
        parameter names, in the spelling of q-values, in empty items, or in
        the order of items of different q normalise alike.
        """
        for name, first, *others in EQUIVALENT:
            for other in others:
                self.assertEqual(normalise(other, name), normalise(first, name), (name, first, other))

    def test_different(self) -> None:
        """
        Values that differ in the order of equal-q items, in a q-value, in a
        token, a parameter, or, for every other header, in case or order,
        do not.
        """
        for name, one, other in DIFFERENT:
            self.assertNotEqual(normalise(one, name), normalise(other, name), (name, one, other))

    def test_normalForm(self) -> None:
        """
        The normal form: lower-cased tokens and parameter names, no spaces,
        the shortest q-values, no C{q=1}, higher q first, equal q in the
        client's order, quoted strings kept as they are; long values too.
        """
        self.assertEqual(normalise("fr;q=0.5, en-US", "accept-language"), "en-us,fr;q=0.5")
        self.assertEqual(normalise("a;q=0.250, b;q=0.25, c, d;Q=1.000", "accept-language"), "c,d,a;q=0.25,b;q=0.25")
        self.assertEqual(normalise("*/*;q=0, Text/HTML;Level=One", "accept"), "text/html;level=One,*/*;q=0")
        self.assertEqual(normalise('text/plain;Q=0.3;x="A, B"', "accept"), 'text/plain;x="A, B";q=0.3')
        items = ["x-%d;q=0.%d" % (i, i % 9 + 1) for i in range(60)]
        long = normalise(", ".join(items).upper(), "accept-language")
        self.assertEqual(long, normalise(",".join(items), "accept-language"))
        self.assertTrue(long.startswith("x-8;q=0.9,x-17;q=0.9,"), long[:40])

    def test_notAList(self) -> None:
        """
        A negotiation header that does not parse (a q-value out of range or
        with four decimals, an unclosed quote) is only trimmed: its case
        and order are kept.
        """
        self.assertEqual(normalise("FR;q=2 , en", "accept-language"), "FR;q=2,en")
        self.assertEqual(normalise("FR;q=0.1234", "accept-language"), "FR;q=0.1234")
        self.assertEqual(normalise("FR;q=abc", "accept-language"), "FR;q=abc")
        self.assertEqual(normalise('text/plain;x="a, B', "accept"), 'text/plain;x="a,B')


class VarianceTests(SynchronousTestCase):
    """
    Tests for L{Variance}: per key, its C{Vary} names and its variants.
    """

    def test_plain(self) -> None:
        """
        A key nothing was tracked for is plain: no names, one variant
        C{()}, and it is not in the L{Variance}.
        """
        variance = Variance(4)
        self.assertEqual(variance.names("k"), ())
        self.assertEqual(list(variance.variants("k")), [()])
        self.assertNotIn("k", variance)

    def test_trackFirst(self) -> None:
        """
        The first variant tracked for a key gives it its names; it
        supersedes the key's plain entry, if any.
        """
        variance = Variance(4)
        self.assertEqual(variance.track("k", ("a",), ("1",)), Tracked(((),), ()))
        self.assertEqual(variance.names("k"), ("a",))
        self.assertEqual(list(variance.variants("k")), [("1",)])
        self.assertIn("k", variance)

    def test_trackMore(self) -> None:
        """
        Variants under the same names live side by side, newest last;
        tracking one again makes it the newest, and nothing is superseded.
        """
        variance = Variance(4)
        variance.track("k", ("a",), ("1",))
        self.assertEqual(variance.track("k", ("a",), ("2",)), Tracked())
        self.assertEqual(variance.track("k", ("a",), ("1",)), Tracked())
        self.assertEqual(list(variance.variants("k")), [("2",), ("1",)])

    def test_slot(self) -> None:
        """
        L{Variance.slot} is the key and the request's normalised variant for
        the key's names; C{()} for a plain key, whatever the headers.
        """
        variance = Variance(4)
        lookup = headers(accept_language=" en ,fr")
        self.assertEqual(variance.slot("k", lookup), ("k", ()))
        variance.track("k", ("accept-language", "x-mode"), ("en,fr", None))
        self.assertEqual(variance.slot("k", lookup), ("k", ("en,fr", None)))

    def test_overflow(self) -> None:
        """
        One variant more than C{max_variants} pushes the oldest out.
        """
        variance = Variance(2)
        variance.track("k", ("a",), ("1",))
        variance.track("k", ("a",), ("2",))
        self.assertEqual(variance.track("k", ("a",), ("3",)), Tracked((), (("1",),)))
        self.assertEqual(list(variance.variants("k")), [("2",), ("3",)])
        variance.track("j", ("a",), ("1",))
        self.assertEqual(list(variance.variants("k")), [("2",), ("3",)])

    def test_newNames(self) -> None:
        """
        A variant under other names supersedes every variant of the key
        and the plain one; the key keeps only the new names and variant.
        """
        variance = Variance(4)
        variance.track("k", ("a",), ("1",))
        variance.track("k", ("a",), ("2",))
        tracked = variance.track("k", ("b",), ("x",))
        self.assertEqual(tracked, Tracked((("1",), ("2",), ()), ()))
        self.assertEqual(variance.names("k"), ("b",))
        self.assertEqual(list(variance.variants("k")), [("x",)])

    def test_plainSupersedes(self) -> None:
        """
        A plain entry supersedes every variant of a key that had names,
        and leaves the key plain; on a plain key it supersedes nothing.
        """
        variance = Variance(4)
        self.assertEqual(variance.track("k", (), ()), Tracked())
        variance.track("k", ("a",), ("1",))
        self.assertEqual(variance.track("k", (), ()), Tracked((("1",), ()), ()))
        self.assertNotIn("k", variance)
        self.assertEqual(variance.names("k"), ())

    def test_untrack(self) -> None:
        """
        Untracking a variant removes it; untracking the last forgets the
        key's names too. Unknown keys and variants are ignored.
        """
        variance = Variance(4)
        variance.track("k", ("a",), ("1",))
        variance.track("k", ("a",), ("2",))
        variance.untrack("k", ("1",))
        variance.untrack("k", ("9",))
        variance.untrack("nothing", ())
        self.assertEqual(variance.names("k"), ("a",))
        self.assertEqual(list(variance.variants("k")), [("2",)])
        variance.untrack("k", ("2",))
        self.assertNotIn("k", variance)

    def test_forget(self) -> None:
        """
        L{Variance.forget} forgets a key and returns every variant it may
        hold, the plain one among them.
        """
        variance = Variance(4)
        variance.track("k", ("a",), ("1",))
        self.assertEqual(variance.forget("k"), (("1",), ()))
        self.assertNotIn("k", variance)
        self.assertEqual(variance.forget("k"), ((),))

    def test_forgetMatchingAndClear(self) -> None:
        """
        L{Variance.forget_matching} forgets the keys its predicate accepts
        and keeps the others; L{Variance.clear} forgets them all.
        """
        variance = Variance(4)
        for key in ("a1", "a2", "b1"):
            variance.track(key, ("x",), ("1",))
        variance.forget_matching(lambda key: key.startswith("a"))
        self.assertNotIn("a1", variance)
        self.assertNotIn("a2", variance)
        self.assertIn("b1", variance)
        variance.clear()
        self.assertNotIn("b1", variance)


class VaryTests(SynchronousTestCase, CacheTestMixin):
    """
    C{Vary} variants in L{ResponseCache}.
    """

    def variant(
        self, key: str, language: Optional[str], body: bytes = b"v"
    ) -> CacheEntry:
        """
        @return: an entry for C{key} varying on C{Accept-Language}.
        """
        return self.makeEntry(
            key,
            body,
            vary=("accept-language",),
            variant=(normalise(language, "accept-language"),),
        )

    def test_matching(self) -> None:
        """
        An entry with C{vary} names is found only by requests whose
        normalised values of those headers equal the entry's variant; a
        missing header is a variant of its own.
        """
        cache = self.makeCache()
        en = self.makeEntry(
            "GET:/a",
            vary=("accept-language", "x-mode"),
            variant=(normalise("en , fr", "accept-language"), None),
        )
        self.put(cache, en)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en,fr")), en)
        self.assertIs(
            cache.lookup("GET:/a", headers(accept_language="  en ,   fr ")), en
        )
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="fr,en")))
        self.assertIsNone(
            cache.lookup("GET:/a", headers(accept_language="en,fr", x_mode="1"))
        )
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))

    def test_equivalentSpellings(self) -> None:
        """
        An entry stored for one spelling of C{Accept-Language} is found by
        every equivalent spelling, and not by a different preference.
        """
        cache = self.makeCache()
        names = ("accept-language",)
        entry = self.makeEntry(
            "GET:/a", vary=names, variant=variant_of(names, headers(accept_language="en-US,fr;q=0.5"))
        )
        self.put(cache, entry)
        for spelling in ["fr;q=0.5, en-us", "EN-US , fr;q=0.50", "en-US;q=1, fr;Q=0.500"]:
            self.assertIs(cache.lookup("GET:/a", headers(accept_language=spelling)), entry, spelling)
        for other in ["fr;q=0.5", "en-US, fr;q=0.4", "fr, en-US"]:
            self.assertIsNone(cache.lookup("GET:/a", headers(accept_language=other)), other)

    def test_missingHeaderVariant(self) -> None:
        """
        A variant stored for requests without the header is found by those
        and not by requests with an empty header.
        """
        cache = self.makeCache()
        none = self.variant("GET:/a", None)
        self.put(cache, none)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), none)
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="")))

    def test_severalVariants(self) -> None:
        """
        Variants of one key live side by side, each counted.
        """
        cache = self.makeCache()
        en, fr = self.variant("GET:/a", "en", b"en"), self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), en)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), fr)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.bytes, en.size + fr.size)

    def test_sameVariantReplaced(self) -> None:
        """
        A new entry for an existing variant replaces it and its body.
        """
        cache = self.makeCache()
        old, new = self.variant("GET:/a", "en", b"old"), self.variant("GET:/a", "en", b"new")
        self.put(cache, old)
        self.put(cache, new)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), new)
        self.assertEqual(cache.entry_count, 1)
        self.assertEqual(ids(self.store.deleted), ids([old.body]))

    def test_maxVariants(self) -> None:
        """
        A key holds at most C{max_variants} variants; storing one more drops
        the oldest stored, and its body.
        """
        cache = self.makeCache(max_variants=2)
        en, fr, de = (self.variant("GET:/a", lang, lang.encode()) for lang in ("en", "fr", "de"))
        self.put(cache, en)
        self.put(cache, fr)
        self.put(cache, de)
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="en")))
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), fr)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="de")), de)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(cache.bytes, fr.size + de.size)
        self.assertEqual(ids(self.store.deleted), ids([en.body]))

    def test_maxVariantsRestoredIsNewest(self) -> None:
        """
        Storing a variant again makes it the newest, so the next drop takes
        another one.
        """
        cache = self.makeCache(max_variants=2)
        self.put(cache, self.variant("GET:/a", "en"))
        self.put(cache, self.variant("GET:/a", "fr"))
        en = self.variant("GET:/a", "en", b"again")
        self.put(cache, en)
        self.put(cache, self.variant("GET:/a", "de"))
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), en)
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="fr")))

    def test_maxVariantsPerKey(self) -> None:
        """
        The variant bound is per key: other keys keep theirs.
        """
        cache = self.makeCache(max_variants=1)
        a = self.variant("GET:/a", "en")
        b = self.variant("GET:/b", "fr")
        self.put(cache, a)
        self.put(cache, b)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), a)
        self.assertIs(cache.lookup("GET:/b", headers(accept_language="fr")), b)

    def test_newVaryNames(self) -> None:
        """
        A response varying on other headers replaces every variant of the
        key: they are gone with their bodies, and lookups use the new names.
        """
        cache = self.makeCache()
        en, fr = self.variant("GET:/a", "en", b"en"), self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        mobile = self.makeEntry(
            "GET:/a", b"m", vary=("x-device",), variant=("mobile",)
        )
        self.put(cache, mobile)
        self.assertEqual(list(cache.entries()), [mobile])
        self.assertEqual(cache.bytes, mobile.size)
        self.assertEqual(
            sorted(ids(self.store.deleted)), sorted(ids([en.body, fr.body]))
        )
        self.assertIsNone(cache.lookup("GET:/a", headers(accept_language="en")))
        self.assertIs(
            cache.lookup("GET:/a", headers(accept_language="en", x_device="mobile")),
            mobile,
        )

    def test_varyReplacesPlain(self) -> None:
        """
        A response with C{vary} names replaces an entry of the key that had
        none.
        """
        cache = self.makeCache()
        plain = self.makeEntry("GET:/a", b"plain")
        en = self.variant("GET:/a", "en")
        self.put(cache, plain)
        self.put(cache, en)
        self.assertEqual(list(cache.entries()), [en])
        self.assertIsNone(cache.lookup("GET:/a", NO_HEADERS))
        self.assertEqual(ids(self.store.deleted), ids([plain.body]))

    def test_plainReplacesVary(self) -> None:
        """
        A response without C{vary} names replaces every variant of the key,
        and is then found whatever the request headers.
        """
        cache = self.makeCache()
        en, fr = self.variant("GET:/a", "en", b"en"), self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        plain = self.makeEntry("GET:/a", b"plain")
        self.put(cache, plain)
        self.assertEqual(list(cache.entries()), [plain])
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), plain)
        self.assertIs(cache.lookup("GET:/a", NO_HEADERS), plain)
        self.assertEqual(
            sorted(ids(self.store.deleted)), sorted(ids([en.body, fr.body]))
        )

    def test_notFoundVariant(self) -> None:
        """
        Variants work in the 404 LRU too, and a variant moving between the
        LRUs leaves no copy behind.
        """
        cache = self.makeCache()
        en = self.variant("GET:/a", "en", b"en")
        gone = self.makeEntry(
            "GET:/a", b"gone", vary=("accept-language",), variant=("en",), not_found=True
        )
        fr = self.variant("GET:/a", "fr", b"fr")
        self.put(cache, en)
        self.put(cache, fr)
        self.put(cache, gone)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="en")), gone)
        self.assertIs(cache.lookup("GET:/a", headers(accept_language="fr")), fr)
        self.assertEqual(cache.entry_count, 2)
        self.assertEqual(ids(self.store.deleted), ids([en.body]))

    def test_evictedVariantsForgotten(self) -> None:
        """
        When LRU eviction takes every variant of a key, the key's C{Vary}
        names are forgotten too.
        """
        en = self.variant("GET:/a", "en")
        cache = self.makeCache(max_bytes=en.size)
        self.put(cache, en)
        self.put(cache, self.makeEntry("GET:/b", b"v"))
        self.assertEqual(cache.evictions, 1)
        self.assertNotIn("GET:/a", cache._variance)
