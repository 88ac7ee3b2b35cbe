package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// writePlot draws two panels into a PNG: the latency CDF (publish → receive
// for fanout, storm start → back for storm, dial → established otherwise) on
// a log time axis, and the delivery (or connect) rate over time.
func (rep *Report) writePlot(path string) error {
	title := map[string][2]string{
		Fanout:       {"publish → receive latency", "deliveries/s"},
		PublishBound: {"publish → receive latency", "deliveries/s"},
		Storm:        {"storm start → back", "connection_established/s"},
		Connect:      {"dial → connection_established", "connection_established/s"},
		Idle:         {"dial → connection_established", "connection_established/s"},
		Presence:     {"join → member_added at each remote subscriber", "(no series)"},
	}[rep.Scenario]

	cdf := plot.New()
	cdf.Title.Text = fmt.Sprintf("herald bench %s: %s (%d values)", rep.Scenario, title[0], rep.latency.Count())
	cdf.X.Label.Text = "ms"
	cdf.Y.Label.Text = "fraction ≤ x"
	cdf.Add(plotter.NewGrid())
	vals, fracs := rep.latency.CDF()
	// A log time axis when the values span two decades or more (its ticks
	// are powers of ten only).
	if len(vals) > 0 && float64(vals[len(vals)-1]) >= 100*math.Max(float64(vals[0]), 1e3) {
		cdf.X.Label.Text = "ms (log)"
		cdf.X.Scale = plot.LogScale{}
		cdf.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	if len(vals) > 0 {
		pts := make(plotter.XYs, 0, len(vals))
		for i, v := range vals {
			pts = append(pts, plotter.XY{X: math.Max(float64(v)/1e6, 1e-3), Y: fracs[i]})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = color.RGBA{B: 200, A: 255}
		cdf.Add(line)
	}

	series := plot.New()
	series.Title.Text = title[1] + " over time (100 ms buckets)"
	series.X.Label.Text = "s since start"
	series.Y.Label.Text = title[1]
	series.Add(plotter.NewGrid())
	if len(rep.series) > 0 {
		// A step line: each bucket's rate held over its 100 ms.
		pts := make(plotter.XYs, 0, 2*len(rep.series)+2)
		for i, v := range rep.series {
			x := float64(i) * float64(bucketNs) / 1e9
			pts = append(pts, plotter.XY{X: x, Y: v}, plotter.XY{X: x + float64(bucketNs)/1e9, Y: v})
		}
		pts = append(pts, plotter.XY{X: pts[len(pts)-1].X, Y: 0})
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = color.RGBA{R: 200, A: 255}
		series.Add(line)
	}

	img := vgimg.New(8*vg.Inch, 8*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	plots := [][]*plot.Plot{{cdf}, {series}}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot: %w", err)
	}
	return f.Close()
}
