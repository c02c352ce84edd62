// WIP
