"""What the tests share: paths, the tiny configuration, fakes of the web, pictures, models and
splits, and running real git and DVC commands. Test modules import from here, never from each
other."""
