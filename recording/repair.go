package recording

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// partSuffix marks a file that is still being written.
const partSuffix = ".part"

// RepairResult describes one orphaned "*.part" file handled by Repair.
type RepairResult struct {
	Part     string        `json:"part"` // the orphaned file
	Path     string        `json:"path"` // the repaired file (empty if removed)
	Kind     FileKind      `json:"kind"`
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	// Removed is set when the part held no media at all and was deleted.
	Removed bool `json:"removed"`
}

// Repair finalizes the "*.webm.part" and "*.ogg.part" files left in dir by a
// crashed or failed writer, so that they play up to the last complete
// block/page: a WebM is remuxed (in Go, with ebml-go) into a new file with
// SeekHead, Cues and Duration; an Ogg is cut after its last complete page,
// which gets the EOS flag. Repaired files get their final name (without
// ".part"); parts without any media are removed. Call it at startup, before
// any writer uses dir. It returns what it handled so the caller can mark
// those recordings repaired; errors for single files are joined, and the
// other files are still processed.
func Repair(ctx context.Context, dir string) ([]RepairResult, error) {
	log := zerolog.Ctx(ctx)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", dir, err)
	}
	var out []RepairResult
	var errs []error
	for _, e := range entries {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())

			break
		}
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, partSuffix) {
			continue
		}
		part := filepath.Join(dir, name)
		final := strings.TrimSuffix(part, partSuffix)
		var res RepairResult
		var rerr error
		switch filepath.Ext(final) {
		case ".ogg":
			res, rerr = repairOgg(part, final)
		case ".webm":
			res, rerr = repairWebM(part, final)
		default:
			continue
		}
		if rerr != nil {
			errs = append(errs, fmt.Errorf("failed to repair %s: %w", part, rerr))
			log.Debug().Err(rerr).Str("path", part).Msg("recording file not repaired") // returned

			continue
		}
		log.Info().Str("path", res.Path).Bool("removed", res.Removed).Dur("duration", res.Duration).
			Msg("repaired orphaned recording file")
		out = append(out, res)
	}

	return out, errors.Join(errs...)
}

func checkTarget(final string) error {
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%w: %s", errTargetExists, final)
	}

	return nil
}
