package auth

import (
	"fmt"
	"net/url"
)

func parseURN(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse URI SAN %q: %w", raw, err)
	}
	return u, nil
}
