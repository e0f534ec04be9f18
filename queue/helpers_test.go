package queue

import (
	"encoding/xml"

	"pushd/internal/stanza"
)

func xmlLang(v string) xml.Attr {
	return xml.Attr{Name: xml.Name{Space: stanza.NSXML, Local: "lang"}, Value: v}
}
