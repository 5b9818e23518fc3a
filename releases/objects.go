package releases

import (
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// Objects is what Checkout reads of a repository: trees whole, blobs as
// streams, and the size of a blob without its content. The daemon reads
// them through git's own cat-file (deployer's Repo), so that no object,
// however it was packed, is ever held whole in the daemon's memory.
type Objects interface {
	// Tree reads tree h.
	Tree(h plumbing.Hash) (*object.Tree, error)
	// Size is the size of blob h, from its header.
	Size(h plumbing.Hash) (int64, error)
	// Blob opens blob h. The reader must be closed before the next call.
	Blob(h plumbing.Hash) (io.ReadCloser, error)
}

// StorerObjects reads objects from a go-git object store.
func StorerObjects(st storer.EncodedObjectStorer) Objects { return storerObjects{st} }

type storerObjects struct{ st storer.EncodedObjectStorer }

func (s storerObjects) Tree(h plumbing.Hash) (*object.Tree, error) { return object.GetTree(s.st, h) }

func (s storerObjects) Size(h plumbing.Hash) (int64, error) { return s.st.EncodedObjectSize(h) }

func (s storerObjects) Blob(h plumbing.Hash) (io.ReadCloser, error) {
	b, err := object.GetBlob(s.st, h)
	if err != nil {
		return nil, err
	}
	r, err := b.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	return r, nil
}
