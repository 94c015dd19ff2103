package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// readProjectHooks reads the hooks section of a project's clawker.yaml:
//
//	hooks:
//	  post-init: |
//	    echo once, after the first init
//	  pre-run: |
//	    echo before every start of the user CMD
//
// Only this shape is understood (a block scalar per hook, or a one-line
// plain value); the rest of the file is ignored. A missing file means no
// hooks. The result maps the staging file name to the script text.
func readProjectHooks(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	hooks := map[string]string{}
	var (
		inHooks   bool
		current   string
		blockInd  = -1
		block     strings.Builder
		keyIndent = -1
	)
	flush := func() {
		if current != "" {
			hooks[current] = block.String()
		}
		current, blockInd = "", -1
		block.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if current != "" && (trimmed == "" || indent > keyIndent) {
			if trimmed == "" {
				block.WriteString("\n")
				continue
			}
			if blockInd < 0 {
				blockInd = indent
			}
			if indent >= blockInd {
				block.WriteString(line[blockInd:] + "\n")
				continue
			}
		}
		if current != "" {
			flush()
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if indent == 0 {
			inHooks = trimmed == "hooks:"
			continue
		}
		if !inHooks {
			continue
		}
		key, val, ok := strings.Cut(trimmed, ":")
		if !ok {
			return nil, fmt.Errorf("%s: cannot parse hooks line %q", path, line)
		}
		name := strings.ReplaceAll(strings.TrimSpace(key), "_", "-")
		if name != stagingPostInit && name != stagingPreRun {
			return nil, fmt.Errorf("%s: unknown hook %q (want post-init or pre-run)", path, key)
		}
		val = strings.TrimSpace(val)
		switch {
		case val == "|" || val == "|-" || val == ">":
			current, keyIndent = name, indent
		case val != "":
			hooks[name] = strings.Trim(val, `"'`) + "\n"
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return hooks, nil
}
