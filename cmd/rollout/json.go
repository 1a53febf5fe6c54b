package main

import (
	"encoding/json"
	"io"
)

func writeJSONLine(w io.Writer, v any) {
	_ = json.NewEncoder(w).Encode(v)
}
