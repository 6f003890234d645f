pub mod localtime;
