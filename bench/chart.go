package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Chart geometry: one row of two panels per realm.
const (
	panelW, panelH = 460, 230
	padLeft        = 70
	padRight       = 15
	padTop         = 30
	padBottom      = 36
	legendH        = 34
)

// Series colours: direct, module (session mode), module (shared mode),
// ideal.
var (
	colorDirect = "#d62728"
	colorModule = "#1f77b4"
	colorShared = "#2ca02c"
	colorIdeal  = "#7f7f7f"
)

// series is one line of a panel.
type series struct {
	name   string
	color  string
	dashed bool
	ys     []float64
}

// panel is one plot: a title, a unit formatter and its lines.
type panel struct {
	title  string
	format func(float64) string
	lines  []series
}

// writeChart writes a hand-made SVG of upstream bytes and requests per
// simulated minute, direct versus module (and the ideal), one row per
// realm: its first run, and the shared-mode run with the handler's
// defaults as a second module line when the first is in session mode.
func writeChart(w io.Writer, runs []*RealmResult) error {
	names := realmNames(runs)
	height := legendH + len(names)*panelH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", 2*panelW, height, 2*panelW, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	legend(&b, findShared(runs) != nil)
	for i, name := range names {
		y := legendH + i*panelH
		rs := runsOf(runs, name)
		bytesPanel, reqPanel := realmPanels(rs[0], findShared(rs))
		drawPanel(&b, bytesPanel, 0, y)
		drawPanel(&b, reqPanel, panelW, y)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// findShared is the first shared-mode run with the handler's defaults
// that can go beside a session-mode run, nil if there is none.
func findShared(runs []*RealmResult) *RealmResult {
	if len(runs) == 0 || runs[0].Variant.shared() {
		return nil
	}
	for _, rr := range runs {
		if rr.Variant == sharedRun {
			return rr
		}
	}
	return nil
}

func legend(b *strings.Builder, shared bool) {
	items := []series{{name: "direct (no proxy)", color: colorDirect}, {name: "through zulip_presence", color: colorModule}, {name: "ideal (design §9)", color: colorIdeal, dashed: true}}
	if shared {
		items[1].name = "zulip_presence, session mode"
		items = append(items[:2], series{name: "shared mode", color: colorShared}, items[2])
	}
	x := padLeft
	for _, s := range items {
		fmt.Fprintf(b, `<line x1="%d" y1="17" x2="%d" y2="17" stroke="%s" stroke-width="2.5"%s/>`+"\n", x, x+24, s.color, dash(s.dashed))
		fmt.Fprintf(b, `<text x="%d" y="21">%s</text>`+"\n", x+30, s.name)
		x += 60 + 7*len(s.name)
	}
}

// realmPanels builds the two panels of a realm from its per-minute
// counters, with the module side of shared, if not nil, as another line.
func realmPanels(rr, shared *RealmResult) (panel, panel) {
	n := len(rr.Minutes)
	var bd, bm, bi, rd, rm, ri []float64
	for _, m := range rr.Minutes {
		bd = append(bd, float64(m.Bytes[sideDirect]))
		bm = append(bm, float64(m.Bytes[sideModule]))
		bi = append(bi, float64(m.IdealBytes))
		rd = append(rd, float64(m.Requests[sideDirect]))
		rm = append(rm, float64(m.Requests[sideModule]))
		ri = append(ri, m.IdealRequests)
	}
	title := fmt.Sprintf("%s: upstream %%s per minute (%d minutes)", rr.Spec.Name, n)
	bytesPanel := panel{title: fmt.Sprintf(title, "bytes"), format: bytesText, lines: []series{
		{name: "direct", color: colorDirect, ys: bd}, {name: "module", color: colorModule, ys: bm}, {name: "ideal", color: colorIdeal, dashed: true, ys: bi}}}
	reqPanel := panel{title: fmt.Sprintf(title, "requests"), format: countF, lines: []series{
		{name: "direct", color: colorDirect, ys: rd}, {name: "module", color: colorModule, ys: rm}, {name: "ideal", color: colorIdeal, dashed: true, ys: ri}}}
	if shared != nil {
		var bs, rs []float64
		for _, m := range shared.Minutes {
			bs = append(bs, float64(m.Bytes[sideModule]))
			rs = append(rs, float64(m.Requests[sideModule]))
		}
		bytesPanel.lines = append(bytesPanel.lines, series{name: "shared", color: colorShared, ys: bs})
		reqPanel.lines = append(reqPanel.lines, series{name: "shared", color: colorShared, ys: rs})
	}
	return bytesPanel, reqPanel
}

// drawPanel draws one panel with its top-left corner at (x0, y0).
func drawPanel(b *strings.Builder, p panel, x0, y0 int) {
	plotW, plotH := panelW-padLeft-padRight, panelH-padTop-padBottom
	left, top := x0+padLeft, y0+padTop
	n, peak := 0, 0.0
	for _, s := range p.lines {
		n = max(n, len(s.ys))
		for _, y := range s.ys {
			peak = math.Max(peak, y)
		}
	}
	ymax := niceCeil(peak)
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, y0+18, escapeXML(p.title))
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		y := float64(top+plotH) - float64(plotH)*float64(i)/4
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, y, left+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-5, y+4, escapeXML(p.format(v)))
	}
	step := max(1, niceStep(n))
	for m := 0; m <= n; m += step {
		x := float64(left) + float64(plotW)*float64(m)/float64(max(n, 1))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/>`+"\n", x, top+plotH, x, top+plotH+4)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x, top+plotH+16, m)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" fill="#555">simulated minute</text>`+"\n", left+plotW/2, top+plotH+30)
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, top, plotW, plotH)
	for _, s := range p.lines {
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash(s.dashed), points(s.ys, n, ymax, left, top, plotW, plotH))
	}
}

// points places minute i's value at the middle of minute i.
func points(ys []float64, n int, ymax float64, left, top, w, h int) string {
	var b strings.Builder
	for i, y := range ys {
		px := float64(left) + float64(w)*(float64(i)+0.5)/float64(max(n, 1))
		py := float64(top+h) - float64(h)*y/ymax
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", px, py)
	}
	return b.String()
}

func dash(dashed bool) string {
	if dashed {
		return ` stroke-dasharray="6 4"`
	}
	return ""
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// niceStep is the minute tick spacing for n minutes.
func niceStep(n int) int {
	for _, s := range []int{1, 2, 5, 10, 15, 30, 60} {
		if n/s <= 10 {
			return s
		}
	}
	return 60
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
