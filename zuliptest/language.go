package zuliptest

import (
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// languageCookie is Django's LANGUAGE_COOKIE_NAME.
const languageCookie = "django_language"

// supportedLanguages is settings.LANGUAGES, which Zulip leaves at
// Django's default (zproject/computed_settings.py sets only LANGUAGE_CODE
// "en-us"): the list of Django 5.x's django/conf/global_settings.py, which
// Zulip 10 and 11 run. Django ships a catalog for each, so
// check_for_language accepts them all.
var supportedLanguages = []string{
	"af", "ar", "ar-dz", "ast", "az", "bg", "be", "bn", "br", "bs", "ca", "ckb", "cs", "cy", "da", "de",
	"dsb", "el", "en", "en-au", "en-gb", "eo", "es", "es-ar", "es-co", "es-mx", "es-ni", "es-ve", "et",
	"eu", "fa", "fi", "fr", "fy", "ga", "gd", "gl", "he", "hi", "hr", "hsb", "hu", "hy", "ia", "id", "ig",
	"io", "is", "it", "ja", "ka", "kab", "kk", "km", "kn", "ko", "ky", "lb", "lt", "lv", "mk", "ml", "mn",
	"mr", "ms", "my", "nb", "ne", "nl", "nn", "os", "pa", "pl", "pt", "pt-br", "ro", "ru", "sk", "sl", "sq",
	"sr", "sr-latn", "sv", "sw", "ta", "te", "tg", "th", "tk", "tr", "tt", "udm", "ug", "uk", "ur", "uz",
	"vi", "zh-hans", "zh-hant",
}

// langFallbacks are the "fallback" entries of Django's LANG_INFO
// (django/conf/locale/__init__.py).
var langFallbacks = map[string]string{
	"zh-cn": "zh-hans", "zh-hk": "zh-hant", "zh-mo": "zh-hant",
	"zh-my": "zh-hans", "zh-sg": "zh-hans", "zh-tw": "zh-hant",
}

// requestLanguage is django.utils.translation.get_language_from_request
// as LocaleMiddleware runs it for an API path (no language prefix): the
// django_language cookie when it names a supported language (or a
// variant of one), else the first supported language of
// Accept-Language, else "en" (settings.LANGUAGE_CODE "en-us"). Zulip
// activates no other language for API requests, so this is the
// Content-Language of every API answer. Read from Django's
// django/utils/translation/trans_real.py.
func requestLanguage(r *http.Request) string {
	if code, ok := djangoCookies(r)[languageCookie]; ok {
		if v, ok := supportedVariant(code); ok {
			return v
		}
	}
	for _, tag := range parseAcceptLanguage(strings.Join(r.Header.Values("Accept-Language"), ",")) {
		if tag == "*" {
			break
		}
		if !languageCodeRE.MatchString(tag) {
			continue
		}
		if v, ok := supportedVariant(tag); ok {
			return v
		}
	}
	return "en"
}

// languageCodeMaxLength is Django's LANGUAGE_CODE_MAX_LENGTH.
const languageCodeMaxLength = 500

var (
	languageCodeRE   = regexp.MustCompile(`(?i)^[a-z]{1,8}(?:-[a-z0-9]{1,8})*(?:@[a-z0-9]{1,20})?$`)
	acceptLanguageRE = regexp.MustCompile(`^([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)(?:\s*;\s*q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?))?(?:\s*,\s*|$)`)
)

// supportedVariant is get_supported_language_variant (not strict): a code
// over the length limit is cut at its last "-" within it; then the code,
// its LANG_INFO fallback and the code cut at each "-" from the right are
// tried, lower-cased against LANGUAGES but returned as given; failing
// those, the first supported variant of the generic language ("fr-fr"
// finds "fr-ca" where only that is supported).
func supportedVariant(code string) (string, bool) {
	if code == "" {
		return "", false
	}
	if len(code) > languageCodeMaxLength {
		i := strings.LastIndex(code[:languageCodeMaxLength], "-")
		if i <= 0 {
			return "", false
		}
		code = code[:i]
	}
	possible := []string{code}
	if f, ok := langFallbacks[code]; ok {
		possible = append(possible, f)
	}
	for i := strings.LastIndex(code, "-"); i >= 0; i = strings.LastIndex(code[:i], "-") {
		possible = append(possible, code[:i])
	}
	for _, c := range possible {
		// check_for_language: a well-formed code with a catalog, which
		// Django ships for every one of LANGUAGES.
		if slices.Contains(supportedLanguages, strings.ToLower(c)) && languageCodeRE.MatchString(c) {
			return c, true
		}
	}
	generic := possible[len(possible)-1]
	for _, s := range supportedLanguages {
		if strings.HasPrefix(s, generic+"-") {
			return s, true
		}
	}
	return "", false
}

// parseAcceptLanguage is parse_accept_lang_header: the lower-cased header
// must be a run of accept_language_re matches, or it gives nothing; tags
// ordered by quality, highest first, keeping the header's order among
// equals. A header over the length limit is read up to its last comma
// within it.
func parseAcceptLanguage(h string) []string {
	if len(h) > languageCodeMaxLength {
		i := strings.LastIndex(h[:languageCodeMaxLength], ",")
		if i <= 0 {
			return nil
		}
		h = h[:i]
	}
	h = strings.ToLower(h)
	type tagQ struct {
		tag string
		q   float64
	}
	var out []tagQ
	for pos := 0; pos < len(h); {
		m := acceptLanguageRE.FindStringSubmatchIndex(h[pos:])
		if m == nil || m[1] == 0 {
			return nil
		}
		q := 1.0
		if m[4] >= 0 {
			q, _ = strconv.ParseFloat(h[pos+m[4]:pos+m[5]], 64)
		}
		out = append(out, tagQ{h[pos+m[2] : pos+m[3]], q})
		pos += m[1]
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].q > out[j].q })
	tags := make([]string, len(out))
	for i, t := range out {
		tags[i] = t.tag
	}
	return tags
}
