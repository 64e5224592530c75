package zuliptest

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// languageCookie is Django's LANGUAGE_COOKIE_NAME.
const languageCookie = "django_language"

// supportedLanguages stands for settings.LANGUAGES: the language codes
// Django will answer in. It is a subset of Zulip's list, enough for tests.
var supportedLanguages = []string{
	"ar", "bg", "ca", "cs", "da", "de", "el", "en", "en-gb", "eo", "es",
	"fa", "fi", "fr", "gl", "hi", "hu", "id", "it", "ja", "ko", "lt", "ml",
	"nl", "pl", "pt", "pt-br", "pt-pt", "ro", "ru", "sk", "sr", "sv", "ta",
	"tr", "uk", "vi", "zh-hans", "zh-hant",
}

// requestLanguage is django.utils.translation.get_language_from_request
// as LocaleMiddleware runs it for an API path (no language prefix): the
// django_language cookie when it names a supported language, else the
// first supported language of Accept-Language, else "en"
// (settings.LANGUAGE_CODE). Zulip activates no other language for API
// requests, so this is the Content-Language of every API answer.
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
		if v, ok := supportedVariant(tag); ok {
			return v
		}
	}
	return "en"
}

// supportedVariant is get_supported_language_variant (not strict): the
// code itself, its generic language, or the first supported variant of
// that language.
func supportedVariant(code string) (string, bool) {
	code = strings.ToLower(code)
	if code == "" || len(code) > 500 {
		return "", false
	}
	generic, _, _ := strings.Cut(code, "-")
	for _, c := range []string{code, generic} {
		for _, s := range supportedLanguages {
			if s == c {
				return s, true
			}
		}
	}
	for _, s := range supportedLanguages {
		if strings.HasPrefix(s, generic+"-") {
			return s, true
		}
	}
	return "", false
}

// parseAcceptLanguage is parse_accept_lang_header: lower-cased language
// tags ordered by quality, highest first, keeping the header's order
// among equals; an unparsable header gives nothing.
func parseAcceptLanguage(h string) []string {
	type tagQ struct {
		tag string
		q   float64
	}
	var out []tagQ
	for _, part := range strings.Split(strings.ToLower(h), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		tag, params, _ := strings.Cut(part, ";")
		tag = strings.TrimSpace(tag)
		q := 1.0
		if params != "" {
			v, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if !ok || err != nil || f < 0 || f > 1 {
				return nil
			}
			q = f
		}
		if tag == "" {
			return nil
		}
		out = append(out, tagQ{tag, q})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].q > out[j].q })
	tags := make([]string, len(out))
	for i, t := range out {
		tags[i] = t.tag
	}
	return tags
}
